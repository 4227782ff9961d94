"""Two servers (two plugin instances, two pools) on one database, many callers at once: the
SDK's concurrency contract, plus what is MySQL's own (the statement timeout, a deadlock's
victim run again)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.session import Transaction, fetch

from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import ChangeKind
from pyspire_sdk.testing.datastore_concurrency_contract import (
    CommitGate,
    DataStoreConcurrencyContract,
)
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.sql_pools_contract import OpenWithSettings, opener

pytestmark = pytest.mark.mysql


class _HeldBeforeCommit(MysqlDataStore):
    """Holds its transactions open after appending their change events, at ``gate``."""

    def __init__(self, gate: CommitGate) -> None:
        super().__init__()
        self.gate = gate

    async def _append_events(self, connection: Any, events: Sequence[tuple[str, str]]) -> None:
        await super()._append_events(connection, events)
        await self.gate.hold()


class TestMysqlConcurrency(DataStoreConcurrencyContract):
    @pytest.fixture
    def open_datastore(
        self, open_with_settings: OpenWithSettings
    ) -> Callable[[], Awaitable[MysqlDataStore]]:
        return lambda: open_with_settings(max_open_conns=6)

    @pytest.fixture
    def open_held_datastore(
        self, mysql_dsn: str, host_services: HostServices
    ) -> Callable[[CommitGate], Awaitable[MysqlDataStore]]:
        def open_(gate: CommitGate) -> Awaitable[MysqlDataStore]:
            held = opener(
                lambda: _HeldBeforeCommit(gate), MysqlDataStoreConfig, mysql_dsn, host_services
            )
            return held()

        return open_

    async def test_a_statement_over_its_timeout_is_unavailable(
        self, open_with_settings: OpenWithSettings
    ) -> None:
        store = await open_with_settings(
            max_open_conns=6, statement_timeout=timedelta(milliseconds=50)
        )
        try:
            with pytest.raises(UnavailableError, match="statement timeout"):
                async with store._read() as connection:
                    await fetch(connection, "SELECT SLEEP(2)")
            assert await store.count_entries() == 0
        finally:
            await store.close()

    async def test_a_deadlock_victim_runs_again_whole(
        self, open_with_settings: OpenWithSettings, fake_clock: FakeClock
    ) -> None:
        first = await open_with_settings(max_open_conns=6)
        second = await open_with_settings(max_open_conns=6)
        both_hold_one = asyncio.Barrier(2)
        runs = {"first": 0, "second": 0}

        def crossing(store: MysqlDataStore, name: str, locks: tuple[str, str]) -> Any:
            async def work(transaction: Transaction) -> str:
                runs[name] += 1
                await store._lock(transaction.connection, "test", locks[0])
                if runs[name] == 1:
                    await both_hold_one.wait()
                await store._lock(transaction.connection, "test", locks[1])
                transaction.event(ChangeKind.NODE, [f"spiffe://example.org/{name}"])
                return name

            return work

        start = fake_clock.now()
        both = asyncio.gather(
            first._transact(crossing(first, "first", ("a", "b"))),
            second._transact(crossing(second, "second", ("b", "a"))),
        )
        try:
            async with asyncio.timeout(30):
                # The victim waits its backoff delay on the host clock before running again.
                for _ in range(3000):
                    if fake_clock.sleepers:
                        break
                    await asyncio.sleep(0.01)
                assert sorted(runs.values()) == [1, 1]
                while not both.done():
                    await fake_clock.advance(0.01)
                    await asyncio.sleep(0.01)
                done = await both
            assert 0.0025 <= (fake_clock.now() - start).total_seconds() < 1
            assert done == ["first", "second"]
            assert sorted(runs.values()) == [1, 2]  # InnoDB rolled one back; it ran again
            events = await first.list_change_events()
            assert sorted(event.object_id for event in events) == [
                "spiffe://example.org/first",
                "spiffe://example.org/second",
            ]
            assert [event.event_id for event in events] == [1, 2]
        finally:
            both.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await both
            await first.close()
            await second.close()
