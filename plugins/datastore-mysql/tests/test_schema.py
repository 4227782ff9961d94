"""Migrations against the real server: the SDK's schema contract (once for many servers, newer
schemas refused, ``disable_migration``, a restart), plus what is MySQL's own: the named lock,
idempotent steps, connection strings."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
from pyspire_datastore_mysql import SCHEMA_VERSION, MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.connection import ConnectionTarget
from pyspire_datastore_mysql.schema import lock_name
from pyspire_datastore_mysql.session import fetch, open_connection
from structlog.testing import capture_logs

from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.sql_pools_contract import SAMPLE_ENTRY, OpenWithSettings, opened
from pyspire_sdk.testing.sql_schema_contract import SqlSchemaContract

pytestmark = pytest.mark.mysql

_opened = functools.partial(opened, MysqlDataStore, MysqlDataStoreConfig)
"""The datastore opened on a connection string (small pools, other settings as given)."""


async def _sql(dsn: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    target = ConnectionTarget.parse("connection_string", dsn)
    connection = await open_connection(target, None, statement_timeout=0.0, read_only=False)
    try:
        return await fetch(connection, query, args)
    finally:
        connection.close()


async def test_a_start_waits_for_the_migration_lock(
    mysql_dsn: str, open_with_settings: OpenWithSettings
) -> None:
    database = ConnectionTarget.parse("connection_string", mysql_dsn).database
    target = ConnectionTarget.parse("connection_string", mysql_dsn)
    holder = await open_connection(target, None, statement_timeout=0.0, read_only=False)
    try:
        assert await fetch(holder, "SELECT GET_LOCK(%s, 0)", (lock_name(database, "migrate"),)) == [
            (1,)
        ]
        starting = asyncio.create_task(open_with_settings())
        await asyncio.sleep(0.5)
        assert not starting.done()
        assert await _sql(
            mysql_dsn,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
        ) == [(0,)]
        await fetch(holder, "SELECT RELEASE_LOCK(%s)", (lock_name(database, "migrate"),))
        store = await asyncio.wait_for(starting, timeout=10)
        await store.close()
    finally:
        holder.close()


async def test_a_step_cut_short_runs_again_whole(
    mysql_dsn: str, host_services: HostServices
) -> None:
    async with _opened(mysql_dsn, host_services):
        pass
    # As a server killed inside step 1 leaves it: some tables made (DDL commits at once), the
    # version not yet written.
    await _sql(mysql_dsn, "UPDATE schema_version SET version = 0")
    await _sql(mysql_dsn, "DROP TABLE change_event_counter")
    await _sql(mysql_dsn, "DELETE FROM object_locks WHERE slot > 10")
    async with _opened(mysql_dsn, host_services) as store:
        assert await store.last_change_event_id() == 0
        await store.create_entry(SAMPLE_ENTRY)
        assert await store.last_change_event_id() == 1
    assert await _sql(mysql_dsn, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert await _sql(mysql_dsn, "SELECT COUNT(*) FROM object_locks") == [(512,)]


async def test_a_missing_database_is_named(mysql_server: str, host_services: HostServices) -> None:
    with pytest.raises(PluginError, match="pyspire_no_such_database") as raised:
        async with _opened(f"{mysql_server}pyspire_no_such_database", host_services):
            pass
    assert "connection_string" in str(raised.value)


async def test_errors_and_logs_never_show_the_password(host_services: HostServices) -> None:
    dsn = "root:Sup3r-Secret@tcp(127.0.0.1:1)/test"
    with capture_logs() as logs, pytest.raises(PluginError) as raised:
        async with _opened(dsn, host_services):
            pass
    assert "Sup3r-Secret" not in str(raised.value)
    assert "root:***@tcp(127.0.0.1:1)/test" in str(raised.value)
    assert "connection_string" in str(raised.value)
    assert "Sup3r-Secret" not in repr(logs)


async def test_uri_connection_strings_work(mysql_dsn: str, host_services: HostServices) -> None:
    database = ConnectionTarget.parse("connection_string", mysql_dsn).database
    async with _opened(f"mysql://root@127.0.0.1:3306/{database}", host_services) as store:
        await store.create_entry(SAMPLE_ENTRY)
    assert await _sql(mysql_dsn, "SELECT COUNT(*) FROM entries") == [(1,)]


class _SchemaProbe:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    async def stored_version(self) -> int | None:
        tables = await _sql(
            self._dsn,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
        )
        if tables == [(0,)]:
            return None
        ((version,),) = await _sql(self._dsn, "SELECT version FROM schema_version")
        return int(version)

    async def set_stored_version(self, version: int) -> None:
        await _sql(self._dsn, "UPDATE schema_version SET version = %s", version)

    async def count_rows(self, table: str) -> int:
        ((count,),) = await _sql(self._dsn, f"SELECT COUNT(*) FROM `{table}`")  # noqa: S608
        return int(count)


class TestMysqlSchema(SqlSchemaContract):
    @pytest.fixture
    def schema_probe(self, mysql_dsn: str) -> _SchemaProbe:
        return _SchemaProbe(mysql_dsn)

    @pytest.fixture
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    @pytest.fixture
    def schema_place(self, mysql_dsn: str) -> str:
        return ConnectionTarget.parse("connection_string", mysql_dsn).database
