"""The ``mysql`` datastore: the pyspire server's state in MySQL or MariaDB, shared by servers.

:class:`MysqlDataStore` is imported on first use, so a process that only registers plugins
(every server start, ``pyspire-server plugins``) does not load the driver.
"""

from typing import TYPE_CHECKING, Any

from pyspire_datastore_mysql.config import MysqlDataStoreConfig
from pyspire_datastore_mysql.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from pyspire_datastore_mysql.store import MysqlDataStore

__all__ = ["SCHEMA_VERSION", "MysqlDataStore", "MysqlDataStoreConfig"]


def __getattr__(name: str) -> Any:
    if name == "MysqlDataStore":
        from pyspire_datastore_mysql.store import MysqlDataStore

        return MysqlDataStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
