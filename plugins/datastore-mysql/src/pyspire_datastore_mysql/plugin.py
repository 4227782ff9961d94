"""Registration of the ``mysql`` datastore with pyspire (the driver is loaded only when the
datastore is built)."""

from __future__ import annotations

__all__ = ["pyspire_datastores"]

from pyspire_datastore_mysql.config import MysqlDataStoreConfig
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.datastore import DataStore


def _new_datastore() -> DataStore:
    from pyspire_datastore_mysql.store import MysqlDataStore

    return MysqlDataStore()


@hookimpl
def pyspire_datastores() -> list[PluginRegistration[MysqlDataStoreConfig, DataStore]]:
    """Offer the ``mysql`` datastore."""
    return [
        PluginRegistration(
            name="mysql",
            config_type=MysqlDataStoreConfig,
            factory=_new_datastore,
            description="the server's state in MySQL or MariaDB, shareable by several servers",
        )
    ]
