"""Each test gets a database of its own on the local MariaDB server, dropped afterwards; where
no server answers, the tests that need one skip and say why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.testing import (
    ServerUnavailableError,
    find_server,
    throwaway_database,
)

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.sql_pools_contract import OpenWithSettings, opener


@pytest.fixture
async def mysql_server() -> str:
    """The connection string of the test server, without a database."""
    try:
        return await find_server()
    except ServerUnavailableError as error:
        pytest.skip(str(error))


@pytest.fixture
async def mysql_dsn(mysql_server: str) -> AsyncIterator[str]:
    """A connection string naming a fresh database of this test alone."""
    async with throwaway_database(mysql_server) as dsn:
        yield dsn


@pytest.fixture
def open_with_settings(mysql_dsn: str, host_services: HostServices) -> OpenWithSettings:
    """Opens the datastore on this test's database (or another), small pools by default."""
    return opener(MysqlDataStore, MysqlDataStoreConfig, mysql_dsn, host_services)
