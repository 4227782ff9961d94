"""The ``k8sbundle`` notifier: the trust bundle's X.509 roots pushed to a ConfigMap and to the
CA bundles of labelled webhooks and API services, as SPIRE's."""

from pyspire_notifier_k8sbundle.config import PLUGIN_NAME, ClusterConfig, K8sBundleConfig
from pyspire_notifier_k8sbundle.notifier import K8sBundleNotifier

__all__ = ["PLUGIN_NAME", "ClusterConfig", "K8sBundleConfig", "K8sBundleNotifier"]
