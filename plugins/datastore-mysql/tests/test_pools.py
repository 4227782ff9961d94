"""The pools: the SDK's contract for SPIRE's ``sql`` pool settings (the read-only replica's
share of the reads, connection lifetimes, cancellation, a closed store), on MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pyspire_datastore_mysql import MysqlDataStore
from pyspire_datastore_mysql.session import fetch
from pyspire_datastore_mysql.testing import throwaway_database

from pyspire_sdk.testing.sql_pools_contract import SqlPoolsContract

pytestmark = pytest.mark.mysql


class _Probe:
    async def replica_session_is_read_only(self, store: MysqlDataStore) -> bool:
        async with store._connection(replica=True) as connection:
            return await fetch(connection, "SELECT @@SESSION.tx_read_only") == [(1,)]

    async def session_id(self, store: MysqlDataStore) -> int:
        async with store._connection() as connection:
            return int((await fetch(connection, "SELECT CONNECTION_ID()"))[0][0])


class TestMysqlPools(SqlPoolsContract):
    @pytest.fixture
    async def replica_connection_string(self, mysql_server: str) -> AsyncIterator[str]:
        """A second database standing in for a replica that lags: it holds other data."""
        async with throwaway_database(mysql_server, prefix="pyspire_replica") as dsn:
            yield dsn

    @pytest.fixture
    def session_probe(self) -> _Probe:
        return _Probe()
