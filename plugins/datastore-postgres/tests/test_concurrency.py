"""Two servers (two plugin instances, two pools) on one schema, many callers at once: the SDK's
concurrency contract, plus what is PostgreSQL's own (notifications at commit, the statement
timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

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
from pyspire_sdk.testing.sql_pools_contract import OpenWithSettings, opener

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


def _entry(path: str) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
        parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
        selectors=(Selector("unix", "uid:1000"),),
    )


class TestPostgresConcurrency(DataStoreConcurrencyContract):
    @pytest.fixture
    def open_datastore(
        self, open_with_settings: OpenWithSettings
    ) -> Callable[[], Awaitable[PostgresDataStore]]:
        return lambda: open_with_settings(max_open_conns=6)

    @pytest.fixture
    def open_held_datastore(
        self, postgres_dsn: str, host_services: HostServices
    ) -> Callable[[CommitGate], Awaitable[PostgresDataStore]]:
        def open_(gate: CommitGate) -> Awaitable[PostgresDataStore]:
            held = opener(
                lambda: _HeldBeforeCommit(gate),
                PostgresDataStoreConfig,
                postgres_dsn,
                host_services,
            )
            return held()

        return open_

    async def test_commits_with_events_notify_listeners(
        self, open_with_settings: OpenWithSettings, postgres_dsn: str, fake_clock: FakeClock
    ) -> None:
        store = await open_with_settings(max_open_conns=6)
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
        self, open_with_settings: OpenWithSettings
    ) -> None:
        store = await open_with_settings(
            max_open_conns=6,
            statement_timeout=timedelta(milliseconds=50),
        )
        try:
            with pytest.raises(UnavailableError, match="statement timeout"):
                async with store._read() as connection:
                    await connection.execute("SELECT pg_sleep(2)")
            assert await store.count_entries() == 0
        finally:
            await store.close()
