"""The ``mysql`` datastore: the pyspire server's state in MySQL or MariaDB, shared by servers."""

from pyspire_datastore_mysql.config import MysqlDataStoreConfig
from pyspire_datastore_mysql.schema import SCHEMA_VERSION
from pyspire_datastore_mysql.store import MysqlDataStore

__all__ = ["SCHEMA_VERSION", "MysqlDataStore", "MysqlDataStoreConfig"]
