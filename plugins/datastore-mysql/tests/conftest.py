"""Each test gets a database of its own on the local MariaDB server, dropped afterwards; where
no server answers, the tests that need one skip and say why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.testing import (
    ServerUnavailableError,
    find_server,
    throwaway_database,
)

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.sql_pools_contract import OpenWithSettings


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

    async def open_(connection_string: str | None = None, **changes: Any) -> MysqlDataStore:
        settings: dict[str, Any] = {"max_open_conns": 2, "max_idle_conns": 1, **changes}
        store = MysqlDataStore()
        config = MysqlDataStoreConfig(connection_string=connection_string or mysql_dsn, **settings)
        await store.configure(config, host_services)
        return store

    return open_
