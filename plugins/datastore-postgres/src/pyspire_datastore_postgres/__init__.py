"""The ``postgres`` datastore: the pyspire server's state in PostgreSQL, shared by servers."""

from pyspire_datastore_postgres.config import PostgresDataStoreConfig
from pyspire_datastore_postgres.schema import SCHEMA_VERSION
from pyspire_datastore_postgres.store import NOTIFY_CHANNEL, PostgresDataStore

__all__ = ["NOTIFY_CHANNEL", "SCHEMA_VERSION", "PostgresDataStore", "PostgresDataStoreConfig"]
