"""Changes made through one server are seen by another polling the events table at
``events_poll_interval`` of the host clock; old events are pruned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig

from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import ChangeWatchingDataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing.fake_clock import FakeClock

pytestmark = pytest.mark.mysql

ENTRY = RegistrationEntry(
    spiffe_id=SpiffeId.parse("spiffe://example.org/workload"),
    parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/x"),
    selectors=(Selector("unix", "uid:1000"),),
)


async def _open(dsn: str, host_services: HostServices) -> MysqlDataStore:
    store = MysqlDataStore()
    await store.configure(
        MysqlDataStoreConfig(
            connection_string=dsn,
            max_open_conns=2,
            max_idle_conns=1,
            events_poll_interval=timedelta(seconds=2),
        ),
        host_services,
    )
    return store


@pytest.fixture
async def servers(
    mysql_dsn: str, host_services: HostServices
) -> AsyncIterator[tuple[MysqlDataStore, MysqlDataStore]]:
    first = await _open(mysql_dsn, host_services)
    second = await _open(mysql_dsn, host_services)
    yield first, second
    await first.close()
    await second.close()


async def _sleeping(clock: FakeClock, count: int = 1) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while clock.sleepers < count:
        assert loop.time() < deadline, "nobody sleeps on the clock"
        await asyncio.sleep(0.005)


async def test_a_change_through_one_server_is_seen_at_the_next_poll_of_the_other(
    servers: tuple[MysqlDataStore, MysqlDataStore], fake_clock: FakeClock
) -> None:
    first, second = servers
    assert isinstance(second, ChangeWatchingDataStore)
    waiting = asyncio.create_task(second.wait_for_change(0))
    await _sleeping(fake_clock)
    created = await first.create_entry(ENTRY)
    await asyncio.sleep(0.05)
    assert not waiting.done()  # polls at its interval, not before
    await fake_clock.advance(timedelta(seconds=1))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await fake_clock.advance(timedelta(seconds=1))
    assert await asyncio.wait_for(waiting, timeout=10) == 1
    assert [e.object_id for e in await second.list_change_events(0)] == [created.id]
    # Already past: answered at once, no sleep.
    assert await second.wait_for_change(0) == 1


async def test_waiting_survives_a_closed_pool_until_cancelled(
    servers: tuple[MysqlDataStore, MysqlDataStore], fake_clock: FakeClock
) -> None:
    _, second = servers
    waiting = asyncio.create_task(second.wait_for_change(0))
    await _sleeping(fake_clock)
    await second.close()
    await fake_clock.advance(timedelta(seconds=2))
    await _sleeping(fake_clock)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_old_events_are_pruned_and_ids_go_on(
    servers: tuple[MysqlDataStore, MysqlDataStore], fake_clock: FakeClock
) -> None:
    first, second = servers
    await first.create_entry(ENTRY)
    await fake_clock.advance(timedelta(hours=13))
    cutoff = fake_clock.now() - timedelta(hours=12)
    await second.set_node_selectors(ENTRY.parent_id, (Selector("a", "b"),))
    assert await second.prune_change_events(cutoff) == 1
    assert [e.event_id for e in await first.list_change_events(0)] == [2]
    assert await first.last_change_event_id() == 2
