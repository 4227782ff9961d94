"""The contract of a SQL datastore's schema migrations, where several servers share a database.

Servers starting together migrate once (one does it, the others wait and find the schema
current, each logging ``datastore opened`` with the ``schema_version_found``, the one that
migrated ``schema migrated`` once per step); a schema written by a newer release is refused
with :class:`~pyspire_sdk.stored_records.SchemaTooNewError` and left untouched;
``disable_migration`` refuses an empty database and opens a current one; what was written is
there after a restart.

Subclass :class:`SqlSchemaContract` in the plugin's tests and provide, in the class or a
``conftest.py``:

- ``open_with_settings``: as for :mod:`pyspire_sdk.testing.sql_pools_contract`, an async
  function ``(connection_string=None, **settings)`` opening the plugin's datastore on the
  test's empty database;
- ``schema_probe``: a :class:`SchemaProbe` reading and writing the test database's schema
  version in the database's own SQL;
- ``schema_version``: the version this release writes;
- ``schema_place``: how errors name the test's database (its name, or its schema's), which a
  refusal must show.
"""

from __future__ import annotations

__all__ = ["SchemaProbe", "SqlSchemaContract"]

import asyncio
from typing import Any, Protocol

import pytest
from structlog.testing import capture_logs

from pyspire_sdk.errors import PluginError
from pyspire_sdk.stored_records import SchemaTooNewError
from pyspire_sdk.testing.sql_pools_contract import SAMPLE_ENTRY, OpenWithSettings

_SERVERS = 6


async def _open_and_close(open_with_settings: OpenWithSettings, **settings: Any) -> None:
    store = await open_with_settings(**settings)
    await store.close()


class SchemaProbe(Protocol):
    """The test database's schema version and rows, read and written around the datastore."""

    async def stored_version(self) -> int | None:
        """The version the schema records, or ``None`` when it has no tables yet."""

    async def set_stored_version(self, version: int) -> None:
        """Record ``version``, as a newer release would."""

    async def count_rows(self, table: str) -> int:
        """How many rows ``table`` holds."""


class SqlSchemaContract:
    """Tests every datastore that migrates a shared SQL schema must pass; see the module
    documentation for the fixtures to provide."""

    @pytest.mark.asyncio
    async def test_many_servers_starting_at_once_migrate_once(
        self,
        open_with_settings: OpenWithSettings,
        schema_probe: SchemaProbe,
        schema_version: int,
    ) -> None:
        with capture_logs() as logs:
            results = await asyncio.gather(
                *(open_with_settings() for _ in range(_SERVERS)), return_exceptions=True
            )
        stores: list[Any] = [store for store in results if not isinstance(store, BaseException)]
        try:
            assert len(stores) == _SERVERS, results
            migrated = [log for log in logs if log["event"] == "schema migrated"]
            assert [log["version"] for log in migrated] == list(range(1, schema_version + 1))
            opened = [log for log in logs if log["event"] == "datastore opened"]
            assert len(opened) == _SERVERS
            assert sorted(log["schema_version_found"] for log in opened).count(0) == 1
            assert await schema_probe.stored_version() == schema_version
            created = await stores[0].create_entry(SAMPLE_ENTRY)
            assert await stores[-1].get_entry(created.id) == created
        finally:
            for store in stores:
                await store.close()

    @pytest.mark.asyncio
    async def test_a_newer_schema_is_refused_and_left_alone(
        self,
        open_with_settings: OpenWithSettings,
        schema_probe: SchemaProbe,
        schema_version: int,
        schema_place: str,
    ) -> None:
        store = await open_with_settings()
        try:
            await store.create_entry(SAMPLE_ENTRY)
        finally:
            await store.close()
        await schema_probe.set_stored_version(schema_version + 1)
        with pytest.raises(SchemaTooNewError) as raised:
            await _open_and_close(open_with_settings)
        message = str(raised.value)
        assert f"schema version {schema_version + 1}" in message
        assert "connection_string" in message
        assert schema_place in message
        assert await schema_probe.stored_version() == schema_version + 1
        assert await schema_probe.count_rows("entries") == 1

    @pytest.mark.asyncio
    async def test_disable_migration_needs_a_current_schema(
        self, open_with_settings: OpenWithSettings, schema_probe: SchemaProbe
    ) -> None:
        with pytest.raises(PluginError, match="disable_migration"):
            await _open_and_close(open_with_settings, disable_migration=True)
        assert await schema_probe.stored_version() is None
        await _open_and_close(open_with_settings)
        store = await open_with_settings(disable_migration=True)
        try:
            assert await store.count_entries() == 0
        finally:
            await store.close()

    @pytest.mark.asyncio
    async def test_reopening_keeps_everything(self, open_with_settings: OpenWithSettings) -> None:
        store = await open_with_settings()
        try:
            entry = await store.create_entry(SAMPLE_ENTRY)
            await store.set_ca_journal("journal", b"blob")
            last = await store.last_change_event_id()
        finally:
            await store.close()
        store = await open_with_settings()
        try:
            assert await store.get_entry(entry.id) == entry
            assert await store.get_ca_journal("journal") == b"blob"
            assert await store.last_change_event_id() == last
        finally:
            await store.close()
