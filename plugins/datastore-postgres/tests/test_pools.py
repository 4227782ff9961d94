"""The pools: the SDK's contract for SPIRE's ``sql`` pool settings (the read-only replica's
share of the reads, connection lifetimes, cancellation, a closed store), on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pyspire_datastore_postgres import PostgresDataStore
from pyspire_datastore_postgres.testing import throwaway_schema

from pyspire_sdk.testing.sql_pools_contract import SqlPoolsContract

pytestmark = pytest.mark.postgres


class _Probe:
    async def replica_session_is_read_only(self, store: PostgresDataStore) -> bool:
        async with store._connection(replica=True) as connection:
            return bool(await connection.fetchval("SHOW default_transaction_read_only") == "on")

    async def session_id(self, store: PostgresDataStore) -> int:
        async with store._connection() as connection:
            return int(await connection.fetchval("SELECT pg_backend_pid()"))


class TestPostgresPools(SqlPoolsContract):
    @pytest.fixture
    async def replica_connection_string(self, postgres_server: str) -> AsyncIterator[str]:
        """A second schema standing in for a replica that lags: it holds other data."""
        async with throwaway_schema(postgres_server, prefix="pyspire_replica") as dsn:
            yield dsn

    @pytest.fixture
    def session_probe(self) -> _Probe:
        return _Probe()
