"""Migrations against the real server: once for many servers, newer schemas refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from pyspire_datastore_postgres import SCHEMA_VERSION, PostgresDataStore, PostgresDataStoreConfig
from structlog.testing import capture_logs

from pyspire_sdk.errors import PluginError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.stored_records import SchemaTooNewError

pytestmark = pytest.mark.postgres

ENTRY = RegistrationEntry(
    spiffe_id=SpiffeId.parse("spiffe://example.org/workload"),
    parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
    selectors=(Selector("unix", "uid:1000"),),
)


def _config(dsn: str, **changes: object) -> PostgresDataStoreConfig:
    return PostgresDataStoreConfig(
        connection_string=dsn,
        max_open_conns=2,
        max_idle_conns=1,
        **changes,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def _opened(
    dsn: str, host_services: HostServices, **changes: object
) -> AsyncIterator[PostgresDataStore]:
    store = PostgresDataStore()
    try:
        await store.configure(_config(dsn, **changes), host_services)
        yield store
    finally:
        await store.close()


async def _sql(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def test_many_servers_starting_at_once_migrate_once(
    postgres_dsn: str, host_services: HostServices
) -> None:
    stores = [PostgresDataStore() for _ in range(6)]
    with capture_logs() as logs:
        await asyncio.gather(
            *(store.configure(_config(postgres_dsn), host_services) for store in stores)
        )
    try:
        migrated = [log for log in logs if log["event"] == "schema migrated"]
        assert [log["version"] for log in migrated] == list(range(1, SCHEMA_VERSION + 1))
        opened = [log for log in logs if log["event"] == "datastore opened"]
        assert len(opened) == 6
        assert sorted(log["schema_version_found"] for log in opened).count(0) == 1
        assert await _sql(postgres_dsn, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        created = await stores[0].create_entry(ENTRY)
        assert await stores[5].get_entry(created.id) == created
    finally:
        for store in stores:
            await store.close()


async def test_a_newer_schema_is_refused_and_left_alone(
    postgres_dsn: str, host_services: HostServices
) -> None:
    async with _opened(postgres_dsn, host_services) as store:
        await store.create_entry(ENTRY)
        schema = store.schema
    await _sql(postgres_dsn, "UPDATE schema_version SET version = $1", SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNewError) as raised:
        async with _opened(postgres_dsn, host_services):
            pass
    message = str(raised.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert schema in message and "connection_string" in message
    assert await _sql(postgres_dsn, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]
    assert await _sql(postgres_dsn, "SELECT COUNT(*) FROM entries") == [(1,)]


async def test_disable_migration_needs_a_current_schema(
    postgres_dsn: str, host_services: HostServices
) -> None:
    with pytest.raises(PluginError, match="disable_migration"):
        async with _opened(postgres_dsn, host_services, disable_migration=True):
            pass
    assert await _sql(postgres_dsn, "SELECT to_regclass('schema_version') IS NULL") == [(True,)]
    async with _opened(postgres_dsn, host_services):
        pass
    async with _opened(postgres_dsn, host_services, disable_migration=True) as store:
        assert await store.count_entries() == 0


async def test_reopening_keeps_everything(postgres_dsn: str, host_services: HostServices) -> None:
    async with _opened(postgres_dsn, host_services) as store:
        entry = await store.create_entry(ENTRY)
        await store.set_ca_journal("journal", b"blob")
        last = await store.last_change_event_id()
    async with _opened(postgres_dsn, host_services) as store:
        assert await store.get_entry(entry.id) == entry
        assert await store.get_ca_journal("journal") == b"blob"
        assert await store.last_change_event_id() == last


async def test_a_missing_schema_is_named(postgres_server: str, host_services: HostServices) -> None:
    dsn = f"{postgres_server}?search_path=pyspire_no_such_schema"
    with pytest.raises(PluginError, match=r"no schema of search_path .*pyspire_no_such_schema"):
        async with _opened(dsn, host_services):
            pass


async def test_errors_and_logs_never_show_the_password(
    postgres_server: str, host_services: HostServices
) -> None:
    dsn = "postgresql://postgres:Sup3r-Secret@127.0.0.1:1/test"
    with capture_logs() as logs, pytest.raises(PluginError) as raised:
        async with _opened(dsn, host_services):
            pass
    assert "Sup3r-Secret" not in str(raised.value)
    assert "postgres:***@127.0.0.1:1" in str(raised.value)
    assert "connection_string" in str(raised.value)
    assert "Sup3r-Secret" not in repr(logs)


async def test_key_value_connection_strings_work(
    postgres_dsn: str, host_services: HostServices
) -> None:
    schema = postgres_dsn.rpartition("search_path=")[2]
    user = "postgres" if "//postgres@" in postgres_dsn else "root"
    pairs = f"host=127.0.0.1 port=5432 dbname=test user={user} options='-c search_path={schema}'"
    async with _opened(pairs, host_services) as store:
        assert store.schema == schema
        await store.create_entry(ENTRY)
    assert await _sql(postgres_dsn, "SELECT COUNT(*) FROM entries") == [(1,)]
