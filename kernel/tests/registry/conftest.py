"""Datastores for registry cache tests: the real SQLite plugin and a small in-memory fake.

The fake implements only what :class:`~pyspire.registry.cache.RegistryCache` reads plus the
writes the tests make, with the same change-feed behaviour (one event per changed object, ids
increasing), and can be told to fail or to interleave a write with a full read.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import NotFoundError, UnavailableError
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import ChangeEvent, ChangeKind, DataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId


class FakeDataStore:
    """Entries, node selectors and a change feed in dictionaries."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.entries: dict[str, RegistrationEntry] = {}
        self.node_selectors: dict[SpiffeId, tuple[Selector, ...]] = {}
        self.events: list[ChangeEvent] = []
        self._ids = itertools.count(1)
        self.unavailable = False
        self.during_full_read: Callable[[], None] | None = None
        self.reads = {"get_entry": 0, "get_node_selectors": 0, "list_all_entries": 0}

    def _check(self) -> None:
        if self.unavailable:
            raise UnavailableError("fake datastore is unavailable")

    def _event(self, kind: ChangeKind, object_id: str) -> None:
        event_id = len(self.events) + 1
        self.events.append(ChangeEvent(event_id, kind, object_id, self._clock.now()))

    # writes, with the DataStore's names and shapes

    async def create_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        self._check()
        stored = replace(
            entry, id=entry.id or f"id-{next(self._ids)}", created_at=self._clock.now()
        )
        self.entries[stored.id] = stored
        self._event(ChangeKind.ENTRY, stored.id)
        return stored

    async def update_entry(
        self, entry: RegistrationEntry, mask: frozenset[str] | None = None
    ) -> RegistrationEntry:
        self._check()
        current = self.entries.get(entry.id)
        if current is None:
            raise NotFoundError(f"entry {entry.id!r} not found")
        stored = replace(entry, revision_number=current.revision_number + 1)
        self.entries[entry.id] = stored
        self._event(ChangeKind.ENTRY, entry.id)
        return stored

    async def delete_entry(self, entry_id: str) -> RegistrationEntry:
        self._check()
        removed = self.entries.pop(entry_id)
        self._event(ChangeKind.ENTRY, entry_id)
        return removed

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        self._check()
        if node.selectors:
            self.node_selectors[node.spiffe_id] = node.selectors
        self._event(ChangeKind.NODE, str(node.spiffe_id))
        return node

    async def set_node_selectors(
        self, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        self._check()
        if selectors:
            self.node_selectors[spiffe_id] = selectors
        else:
            self.node_selectors.pop(spiffe_id, None)
        self._event(ChangeKind.NODE, str(spiffe_id))

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        self._check()
        self.node_selectors.pop(spiffe_id, None)
        self._event(ChangeKind.NODE, str(spiffe_id))
        return AttestedNode(spiffe_id=spiffe_id, attestation_type="fake")

    # reads the cache makes

    async def get_entry(self, entry_id: str) -> RegistrationEntry | None:
        self._check()
        self.reads["get_entry"] += 1
        return self.entries.get(entry_id)

    async def list_all_entries(self) -> list[RegistrationEntry]:
        self._check()
        self.reads["list_all_entries"] += 1
        snapshot = list(self.entries.values())
        if self.during_full_read is not None:
            hook, self.during_full_read = self.during_full_read, None
            hook()
        return snapshot

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]:
        self._check()
        self.reads["get_node_selectors"] += 1
        return self.node_selectors.get(spiffe_id, ())

    async def list_all_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        self._check()
        return dict(self.node_selectors)

    async def list_change_events(
        self, after_event_id: int = 0, limit: int = 0
    ) -> list[ChangeEvent]:
        self._check()
        newer = [event for event in self.events if event.event_id > after_event_id]
        return newer[:limit] if limit else newer

    async def last_change_event_id(self) -> int:
        self._check()
        return len(self.events)

    def write_now(self, entry: RegistrationEntry) -> None:
        """Store an entry synchronously (for hooks that run inside a read)."""
        self.entries[entry.id] = entry
        self._event(ChangeKind.ENTRY, entry.id)


def as_datastore(store: Any) -> DataStore:
    return cast(DataStore, store)


@pytest.fixture
def fake_store(host_services: HostServices) -> FakeDataStore:
    return FakeDataStore(host_services.clock)


@pytest.fixture
async def sqlite_store(tmp_path: Path, host_services: HostServices) -> AsyncIterator[DataStore]:
    store = SqliteDataStore()
    try:
        await store.configure(
            SqliteDataStoreConfig(database_path=tmp_path / "registry.sqlite3"), host_services
        )
        yield cast(DataStore, store)
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "fake"])
def datastore(request: pytest.FixtureRequest) -> DataStore:
    """The real SQLite datastore and the fake, so every cache test runs against both."""
    name = "sqlite_store" if request.param == "sqlite" else "fake_store"
    return as_datastore(request.getfixturevalue(name))
