"""The module pyspire loads through the entry point: it registers the ``aws_secretsmanager``
SVID store.

Registration imports no AWS SDK: aiobotocore is loaded at the first put or delete.
"""

from __future__ import annotations

__all__ = ["pyspire_svid_stores"]

from typing import Any

from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.svid_store import SvidStore


@hookimpl
def pyspire_svid_stores() -> list[PluginRegistration[Any, SvidStore]]:
    from pyspire_svidstore_aws_secretsmanager.config import SecretsManagerConfig
    from pyspire_svidstore_aws_secretsmanager.store import PLUGIN_NAME, SecretsManagerStore

    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=SecretsManagerConfig,
            factory=SecretsManagerStore,
            description="stored svids as secrets in aws secrets manager",
        )
    ]
