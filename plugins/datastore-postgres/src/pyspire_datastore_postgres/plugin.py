"""Registration of the ``postgres`` datastore with pyspire."""

from __future__ import annotations

__all__ = ["pyspire_datastores"]

from pyspire_datastore_postgres.config import PostgresDataStoreConfig
from pyspire_datastore_postgres.store import PostgresDataStore
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.datastore import DataStore


@hookimpl
def pyspire_datastores() -> list[PluginRegistration[PostgresDataStoreConfig, DataStore]]:
    """Offer the ``postgres`` datastore."""
    return [
        PluginRegistration(
            name="postgres",
            config_type=PostgresDataStoreConfig,
            factory=PostgresDataStore,
            description="the server's state in PostgreSQL, shareable by several servers",
        )
    ]
