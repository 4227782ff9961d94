"""Registration of the ``mysql`` datastore with pyspire."""

from __future__ import annotations

__all__ = ["pyspire_datastores"]

from pyspire_datastore_mysql.config import MysqlDataStoreConfig
from pyspire_datastore_mysql.store import MysqlDataStore
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.datastore import DataStore


@hookimpl
def pyspire_datastores() -> list[PluginRegistration[MysqlDataStoreConfig, DataStore]]:
    """Offer the ``mysql`` datastore."""
    return [
        PluginRegistration(
            name="mysql",
            config_type=MysqlDataStoreConfig,
            factory=MysqlDataStore,
            description="the server's state in MySQL or MariaDB, shareable by several servers",
        )
    ]
