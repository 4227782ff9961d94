"""The pools: the SDK's contract for SPIRE's ``sql`` pool settings (the read-only replica's
share of the reads, connection lifetimes, cancellation, a closed store), on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pyspire_datastore_postgres import PostgresDataStore, PostgresDataStoreConfig
from pyspire_datastore_postgres.testing import throwaway_schema

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.sql_pools_contract import OpenWithSettings, SqlPoolsContract

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
    def open_with_settings(
        self, postgres_dsn: str, host_services: HostServices
    ) -> OpenWithSettings:
        async def open_(connection_string: str | None = None, **changes: Any) -> PostgresDataStore:
            settings: dict[str, Any] = {"max_open_conns": 2, "max_idle_conns": 1, **changes}
            store = PostgresDataStore()
            config = PostgresDataStoreConfig(
                connection_string=connection_string or postgres_dsn, **settings
            )
            await store.configure(config, host_services)
            return store

        return open_

    @pytest.fixture
    async def replica_connection_string(self, postgres_server: str) -> AsyncIterator[str]:
        """A second schema standing in for a replica that lags: it holds other data."""
        async with throwaway_schema(postgres_server, prefix="pyspire_replica") as dsn:
            yield dsn

    @pytest.fixture
    def session_probe(self) -> _Probe:
        return _Probe()
