"""Each test gets a schema of its own on the local PostgreSQL server, dropped afterwards; where
no server answers, the tests that need one skip and say why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pyspire_datastore_postgres import PostgresDataStore, PostgresDataStoreConfig
from pyspire_datastore_postgres.testing import (
    ServerUnavailableError,
    find_server,
    throwaway_schema,
)

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.sql_pools_contract import OpenWithSettings, opener


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
    return opener(PostgresDataStore, PostgresDataStoreConfig, postgres_dsn, host_services)
