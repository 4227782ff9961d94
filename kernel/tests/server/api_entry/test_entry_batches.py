"""Entry batches cost one datastore transaction however many items they hold, and their items
stay independent: what one item does never changes another item's result."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import cast

import pytest
from grpclib.const import Status
from pyspire_datastore_sqlite import SqliteDataStore

from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_pb
from pyspire.proto.gen.codec import spire_api_types as pb
from pyspire.server.api.entry import EntryService
from pyspire.server.context import ServerContext
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.datastore import DataStore

from .conftest import create_entries, wire_entry

INVALID = Status.INVALID_ARGUMENT.value


@pytest.fixture
async def write_transactions(server_context: ServerContext) -> AsyncIterator[list[str]]:
    """Every write transaction the datastore begins from now on (its statements traced)."""
    datastore = server_context.datastore
    assert isinstance(datastore, SqliteDataStore)
    writer = datastore._writer
    assert writer is not None
    begun: list[str] = []

    def trace(statement: str) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            begun.append(statement)

    await writer.set_trace_callback(trace)
    yield begun
    # sqlite3 takes None to stop tracing; aiosqlite's annotation leaves it out.
    await writer.set_trace_callback(None)  # type: ignore[arg-type]


async def test_a_create_batch_is_one_transaction(
    entry_service: EntryService, write_transactions: list[str]
) -> None:
    response = await entry_service.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(entries=[wire_entry(f"/w{i}") for i in range(50)])
    )
    assert [result.status.code for result in response.decode().results] == [0] * 50
    assert len(write_transactions) == 1


async def test_update_and_delete_batches_are_one_transaction_each(
    entry_service: EntryService, server_context: ServerContext, write_transactions: list[str]
) -> None:
    created = await create_entries(entry_service, *(wire_entry(f"/w{i}") for i in range(30)))
    write_transactions.clear()
    updated = await entry_service.batch_update_entry(
        entry_pb.BatchUpdateEntryRequest(
            entries=[dataclasses.replace(entry, hint="new") for entry in created],
            input_mask=pb.EntryMask(hint=True),
        )
    )
    assert [result.status.code for result in updated.decode().results] == [0] * 30
    assert {result.entry.hint for result in updated.decode().results} == {"new"}
    assert len(write_transactions) == 1
    assert server_context.registry.get_entry(created[0].id) is not None
    write_transactions.clear()
    deleted = await entry_service.batch_delete_entry(
        entry_pb.BatchDeleteEntryRequest(ids=[entry.id for entry in created])
    )
    assert [result.status.code for result in deleted.decode().results] == [0] * 30
    assert len(write_transactions) == 1
    assert server_context.registry.get_entry(created[0].id) is None


async def test_items_of_one_batch_see_each_other(entry_service: EntryService) -> None:
    response = await entry_service.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(
            entries=[
                wire_entry("/same", hint="first"),
                wire_entry("/bad", selectors=()),
                wire_entry("/same", hint="second"),
                wire_entry("/other", id="given"),
                wire_entry("/another", id="given"),
            ]
        )
    )
    first, bad, same, given, taken = response.decode().results
    assert first.status.code == 0
    assert bad.status.code == INVALID
    assert (same.status.code, same.status.message) == (
        Status.ALREADY_EXISTS.value,
        "similar entry already exists",
    )
    assert same.entry.id == first.entry.id
    assert same.entry.hint == "first"
    assert (given.status.code, given.entry.id) == (0, "given")
    assert taken.status.code == Status.ALREADY_EXISTS.value
    assert taken.status.message.startswith("failed to create entry: ")


class _DatastoreDown:
    """The server's datastore, except that its batch writes fail as if it were unreachable."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def create_entries_if_not_exist(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[object]:
        raise UnavailableError("datastore is unreachable")

    async def update_entries(
        self, entries: Sequence[RegistrationEntry], mask: frozenset[str] | None = None
    ) -> list[object]:
        raise UnavailableError("datastore is unreachable")

    async def delete_entries(self, entry_ids: Sequence[str]) -> list[object]:
        raise UnavailableError("datastore is unreachable")


async def test_an_unreachable_datastore_fails_every_valid_item(
    entry_service: EntryService, server_context: ServerContext
) -> None:
    [stored] = await create_entries(entry_service, wire_entry("/stored"))
    datastore = cast(DataStore, _DatastoreDown(server_context.datastore))
    down = EntryService(dataclasses.replace(server_context, datastore=datastore))
    unavailable = Status.UNAVAILABLE.value
    created = await down.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(
            entries=[wire_entry("/a"), wire_entry("/bad", selectors=()), wire_entry("/b")]
        )
    )
    assert [result.status.code for result in created.decode().results] == [
        unavailable,
        INVALID,
        unavailable,
    ]
    updated = await down.batch_update_entry(
        entry_pb.BatchUpdateEntryRequest(
            entries=[dataclasses.replace(stored, hint="x"), pb.Entry()],
            input_mask=pb.EntryMask(hint=True),
        )
    )
    assert [result.status.code for result in updated.decode().results] == [unavailable, INVALID]
    deleted = await down.batch_delete_entry(entry_pb.BatchDeleteEntryRequest(ids=[stored.id, ""]))
    assert [result.status.code for result in deleted.decode().results] == [unavailable, INVALID]
    assert [entry.id for entry in await server_context.datastore.list_all_entries()] == [stored.id]
