"""Two servers (two plugin instances, two pools) on one schema, many callers at once: the SDK's
concurrency contract, plus what is PostgreSQL's own (notifications at commit, the statement
timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from pyspire_datastore_postgres import NOTIFY_CHANNEL, PostgresDataStore, PostgresDataStoreConfig

from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.model import JoinToken, RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing.datastore_concurrency_contract import (
    CommitGate,
    DataStoreConcurrencyContract,
)
from pyspire_sdk.testing.fake_clock import FakeClock

pytestmark = pytest.mark.postgres


class _HeldBeforeCommit(PostgresDataStore):
    """Holds its transactions open after appending their change events, at ``gate``."""

    def __init__(self, gate: CommitGate) -> None:
        super().__init__()
        self.gate = gate

    async def _append_events(
        self, connection: asyncpg.Connection, events: Sequence[tuple[str, str]]
    ) -> None:
        await super()._append_events(connection, events)
        await self.gate.hold()


async def _open(
    store: PostgresDataStore, dsn: str, host_services: HostServices, **changes: object
) -> PostgresDataStore:
    settings: dict[str, Any] = {"max_open_conns": 6, "max_idle_conns": 1, **changes}
    await store.configure(PostgresDataStoreConfig(connection_string=dsn, **settings), host_services)
    return store


def _entry(path: str) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
        parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
        selectors=(Selector("unix", "uid:1000"),),
    )


class TestPostgresConcurrency(DataStoreConcurrencyContract):
    @pytest.fixture
    def open_datastore(
        self, postgres_dsn: str, host_services: HostServices
    ) -> Callable[[], Awaitable[PostgresDataStore]]:
        return lambda: _open(PostgresDataStore(), postgres_dsn, host_services)

    @pytest.fixture
    def open_held_datastore(
        self, postgres_dsn: str, host_services: HostServices
    ) -> Callable[[CommitGate], Awaitable[PostgresDataStore]]:
        return lambda gate: _open(
            _HeldBeforeCommit(gate), postgres_dsn, host_services, max_open_conns=2
        )

    async def test_commits_with_events_notify_listeners(
        self, postgres_dsn: str, host_services: HostServices, fake_clock: FakeClock
    ) -> None:
        store = await _open(PostgresDataStore(), postgres_dsn, host_services)
        listener = await asyncpg.connect(postgres_dsn)
        received: asyncio.Queue[str] = asyncio.Queue()
        try:

            def ours(_connection: object, _pid: int, _channel: str, payload: str) -> None:
                # Other runs on this database notify the same channel, for their own schemas.
                if payload.startswith(f"{store.schema}:"):
                    received.put_nowait(payload)

            await listener.add_listener(NOTIFY_CHANNEL, ours)
            await store.create_join_token(JoinToken("quiet", fake_clock.now()))
            await store.create_entries([_entry("/n1"), _entry("/n2")])
            payload = await asyncio.wait_for(received.get(), timeout=10)
            assert payload == f"{store.schema}:2"
            assert received.empty()
        finally:
            await listener.close()
            await store.close()

    async def test_a_statement_over_its_timeout_is_unavailable(
        self, postgres_dsn: str, host_services: HostServices
    ) -> None:
        store = await _open(
            PostgresDataStore(),
            postgres_dsn,
            host_services,
            statement_timeout=timedelta(milliseconds=50),
        )
        try:
            with pytest.raises(UnavailableError, match="statement timeout"):
                async with store._read() as connection:
                    await connection.execute("SELECT pg_sleep(2)")
            assert await store.count_entries() == 0
        finally:
            await store.close()
