"""The entry point pyspire loads: it registers ``k8sbundle``.

Registration imports nothing heavy: kubernetes_asyncio is loaded when the notifier is
configured.
"""

from __future__ import annotations

__all__ = ["pyspire_notifiers"]

from pyspire_notifier_k8sbundle.config import PLUGIN_NAME, K8sBundleConfig
from pyspire_notifier_k8sbundle.notifier import K8sBundleNotifier
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.notifier import Notifier


@hookimpl
def pyspire_notifiers() -> list[PluginRegistration[K8sBundleConfig, Notifier]]:
    """The one notifier this package provides."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=K8sBundleConfig,
            factory=K8sBundleNotifier,
            description="pushes the X.509 roots to a ConfigMap, webhooks and API services",
        )
    ]
