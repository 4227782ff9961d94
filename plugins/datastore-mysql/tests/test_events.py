"""Changes made through one server are heard by another polling the counters every
``events_poll_interval`` of the host clock; failed polls end in a resync; old events are
pruned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import structlog
from pyspire_datastore_mysql import MysqlDataStore, MysqlDataStoreConfig
from pyspire_datastore_mysql.watch import ChangeWatch, Counters
from structlog.testing import capture_logs

from pyspire_sdk.backoff import BackoffPolicy
from pyspire_sdk.bundle import Bundle, JwtAuthority
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import ChangeSignal, WatchableDataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.sql_pools_contract import SAMPLE_ENTRY


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


async def _settled(clock: FakeClock) -> None:
    """Until the watch sleeps on the clock again (its poll done)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    await asyncio.sleep(0.01)
    while clock.sleepers < 1:
        assert loop.time() < deadline, "the watch never sleeps"
        await asyncio.sleep(0.005)


@pytest.mark.mysql
async def test_changes_through_another_server_are_heard_at_the_next_poll(
    servers: tuple[MysqlDataStore, MysqlDataStore], fake_clock: FakeClock
) -> None:
    first, second = servers
    assert isinstance(second, WatchableDataStore)
    heard: list[ChangeSignal] = []
    watch = asyncio.create_task(second.watch_changes(heard.append))
    try:
        await _settled(fake_clock)
        assert heard == [ChangeSignal.CHANGED]  # once established
        await first.create_entry(SAMPLE_ENTRY)
        await fake_clock.advance(timedelta(seconds=1))
        await _settled(fake_clock)
        assert heard == [ChangeSignal.CHANGED]  # polls at its interval, not before
        await fake_clock.advance(timedelta(seconds=1))
        await _settled(fake_clock)
        assert heard == [ChangeSignal.CHANGED] * 2
        await fake_clock.advance(timedelta(seconds=2))
        await _settled(fake_clock)
        assert len(heard) == 2  # nothing new, nothing said
        await first.append_bundle(
            Bundle(TrustDomain("example.org"), jwt_authorities=(JwtAuthority("k", b"key"),))
        )
        await fake_clock.advance(timedelta(seconds=2))
        await _settled(fake_clock)
        assert heard == [ChangeSignal.CHANGED] * 3  # a bundle written, no event
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


@pytest.mark.mysql
async def test_old_events_are_pruned_and_ids_go_on(
    servers: tuple[MysqlDataStore, MysqlDataStore], fake_clock: FakeClock
) -> None:
    first, second = servers
    await first.create_entry(SAMPLE_ENTRY)
    await fake_clock.advance(timedelta(hours=13))
    cutoff = fake_clock.now() - timedelta(hours=12)
    await second.set_node_selectors(SAMPLE_ENTRY.parent_id, (Selector("a", "b"),))
    assert await second.prune_change_events(cutoff) == 1
    assert [e.event_id for e in await first.list_change_events(0)] == [2]
    assert await first.last_change_event_id() == 2


async def test_failed_polls_are_retried_and_end_in_a_resync(fake_clock: FakeClock) -> None:
    answers: list[Counters | Exception] = [
        UnavailableError("down"),  # not yet established
        (1, 0),
        (1, 0),
        UnavailableError("lost"),
        UnavailableError("still lost"),
        (5, 0),
        (5, 1),
    ]

    async def poll() -> Counters:
        answer = answers.pop(0) if answers else (5, 1)
        if isinstance(answer, Exception):
            raise answer
        return answer

    heard: list[ChangeSignal] = []
    retry = BackoffPolicy(initial=1.0, maximum=4.0, jitter=0.0)
    watch = ChangeWatch(poll, fake_clock, structlog.get_logger("test"), interval=0.5, retry=retry)
    with capture_logs() as logs:
        task = asyncio.create_task(watch.run(heard.append))
        try:
            expected = [
                [],  # first poll failed: waits 1 s
                [ChangeSignal.CHANGED],  # established
                [ChangeSignal.CHANGED],  # same counters
                [ChangeSignal.CHANGED],  # failed: 1 s
                [ChangeSignal.CHANGED],  # failed again: 2 s
                [ChangeSignal.CHANGED, ChangeSignal.RESYNC],
                [ChangeSignal.CHANGED, ChangeSignal.RESYNC, ChangeSignal.CHANGED],
            ]
            delays = [1.0, 0.5, 0.5, 1.0, 2.0, 0.5, 0.5]
            for step, delay in zip(expected, delays, strict=True):
                await _settled(fake_clock)
                assert heard == step
                await fake_clock.advance(timedelta(seconds=delay))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    warnings = [log for log in logs if log["event"] == "change polling unavailable"]
    assert len(warnings) == 2  # once per outage
    assert sum(log["event"] == "change polling restored" for log in logs) == 2
