"""The ``sqlite`` datastore: the pyspire server's state in one local SQLite file."""

from pyspire_datastore_sqlite.config import SqliteDataStoreConfig
from pyspire_datastore_sqlite.schema import SCHEMA_VERSION, SchemaTooNewError
from pyspire_datastore_sqlite.store import SqliteDataStore

__all__ = ["SCHEMA_VERSION", "SchemaTooNewError", "SqliteDataStore", "SqliteDataStoreConfig"]
