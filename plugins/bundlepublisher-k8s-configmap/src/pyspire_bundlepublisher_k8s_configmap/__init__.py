"""The ``k8s_configmap`` bundle publisher: the trust bundle kept in a ConfigMap of each
configured cluster, as SPIRE's."""

from pyspire_bundlepublisher_k8s_configmap.publisher import (
    PLUGIN_NAME,
    ClusterConfig,
    K8sConfigMapConfig,
    K8sConfigMapPublisher,
)

__all__ = ["PLUGIN_NAME", "ClusterConfig", "K8sConfigMapConfig", "K8sConfigMapPublisher"]
