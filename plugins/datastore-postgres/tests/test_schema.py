"""Migrations against the real server: the SDK's schema contract (once for many servers, newer
schemas refused, ``disable_migration``, a restart), plus what is PostgreSQL's own: the schema
named by ``search_path``, connection strings."""

from __future__ import annotations

import functools

import asyncpg
import pytest
from pyspire_datastore_postgres import SCHEMA_VERSION, PostgresDataStore, PostgresDataStoreConfig
from structlog.testing import capture_logs

from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.sql_pools_contract import SAMPLE_ENTRY, opened
from pyspire_sdk.testing.sql_schema_contract import SqlSchemaContract

pytestmark = pytest.mark.postgres

_opened = functools.partial(opened, PostgresDataStore, PostgresDataStoreConfig)
"""The datastore opened on a connection string (small pools, other settings as given)."""


async def _sql(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


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
        await store.create_entry(SAMPLE_ENTRY)
    assert await _sql(postgres_dsn, "SELECT COUNT(*) FROM entries") == [(1,)]


class _SchemaProbe:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    async def stored_version(self) -> int | None:
        if await _sql(self._dsn, "SELECT to_regclass('schema_version') IS NULL") == [(True,)]:
            return None
        ((version,),) = await _sql(self._dsn, "SELECT version FROM schema_version")
        return int(version)

    async def set_stored_version(self, version: int) -> None:
        await _sql(self._dsn, "UPDATE schema_version SET version = $1", version)

    async def count_rows(self, table: str) -> int:
        ((count,),) = await _sql(self._dsn, f'SELECT COUNT(*) FROM "{table}"')  # noqa: S608
        return int(count)


class TestPostgresSchema(SqlSchemaContract):
    @pytest.fixture
    def schema_probe(self, postgres_dsn: str) -> _SchemaProbe:
        return _SchemaProbe(postgres_dsn)

    @pytest.fixture
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    @pytest.fixture
    def schema_place(self, postgres_dsn: str) -> str:
        return postgres_dsn.rpartition("search_path=")[2]
