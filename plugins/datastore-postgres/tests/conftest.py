"""Each test gets a schema of its own on the local PostgreSQL server, dropped afterwards; where
no server answers, the tests that need one skip and say why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pyspire_datastore_postgres import PostgresDataStore, PostgresDataStoreConfig
from pyspire_datastore_postgres.testing import (
    ServerUnavailableError,
    find_server,
    throwaway_schema,
)

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.sql_pools_contract import OpenWithSettings


@pytest.fixture
async def postgres_server() -> str:
    """The connection string of the test server (no schema chosen)."""
    try:
        return await find_server()
    except ServerUnavailableError as error:
        pytest.skip(str(error))


@pytest.fixture
async def postgres_dsn(postgres_server: str) -> AsyncIterator[str]:
    """A connection string whose search_path is a fresh schema of this test alone."""
    async with throwaway_schema(postgres_server) as dsn:
        yield dsn


@pytest.fixture
def open_with_settings(postgres_dsn: str, host_services: HostServices) -> OpenWithSettings:
    """Opens the datastore on this test's schema (or another), small pools by default."""

    async def open_(connection_string: str | None = None, **changes: Any) -> PostgresDataStore:
        settings: dict[str, Any] = {"max_open_conns": 2, "max_idle_conns": 1, **changes}
        store = PostgresDataStore()
        config = PostgresDataStoreConfig(
            connection_string=connection_string or postgres_dsn, **settings
        )
        await store.configure(config, host_services)
        return store

    return open_
