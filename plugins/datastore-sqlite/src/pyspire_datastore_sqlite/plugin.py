"""Registration of the ``sqlite`` datastore with pyspire."""

from __future__ import annotations

__all__ = ["pyspire_datastores"]

from pyspire_datastore_sqlite.config import SqliteDataStoreConfig
from pyspire_datastore_sqlite.store import SqliteDataStore
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.datastore import DataStore


@hookimpl
def pyspire_datastores() -> list[PluginRegistration[SqliteDataStoreConfig, DataStore]]:
    """Offer the ``sqlite`` datastore."""
    return [
        PluginRegistration(
            name="sqlite",
            config_type=SqliteDataStoreConfig,
            factory=SqliteDataStore,
            description="the server's state in a local SQLite file",
        )
    ]
