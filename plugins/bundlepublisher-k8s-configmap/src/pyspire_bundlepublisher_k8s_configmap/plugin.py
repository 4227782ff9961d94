"""The entry point pyspire loads: it registers ``k8s_configmap``.

Registration imports nothing heavy: kubernetes_asyncio is loaded when a cluster is configured.
"""

from __future__ import annotations

__all__ = ["pyspire_bundle_publishers"]

from pyspire_bundlepublisher_k8s_configmap.publisher import (
    PLUGIN_NAME,
    K8sConfigMapConfig,
    K8sConfigMapPublisher,
)
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher


@hookimpl
def pyspire_bundle_publishers() -> list[PluginRegistration[K8sConfigMapConfig, BundlePublisher]]:
    """The one bundle publisher this package provides."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=K8sConfigMapConfig,
            factory=K8sConfigMapPublisher,
            description="keeps the trust bundle in Kubernetes ConfigMaps",
        )
    ]
