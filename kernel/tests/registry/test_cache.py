"""The registry cache following the datastore's change feed, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from pyspire.registry.cache import RegistryCache
from pyspire.registry.validation import node_alias_parent
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.plugins.datastore import ChangeEvent, ChangeKind, ChangeSignal, DataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import FakeDataStore, as_datastore

TD = TrustDomain("example.org")
SERVER = node_alias_parent(TD)
AGENT_A = SpiffeId.parse("spiffe://example.org/spire/agent/a")
AGENT_B = SpiffeId.parse("spiffe://example.org/spire/agent/b")
REGION = Selector("aws_iid", "region:us-east-1")
TAG = Selector("aws_iid", "tag:role:db")


def sid(path: str) -> SpiffeId:
    return SpiffeId.from_path(TD, path)


def new_entry(
    spiffe_path: str, parent: SpiffeId, *selectors: Selector, **fields: object
) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=sid(spiffe_path),
        parent_id=parent,
        selectors=selectors or (Selector("path", spiffe_path),),
        **fields,  # type: ignore[arg-type]
    )


def paths(entries: tuple[RegistrationEntry, ...]) -> list[str]:
    return [entry.spiffe_id.path for entry in entries]


async def until(condition: Callable[[], object], seconds: float = 5.0) -> None:
    """Wait (in real time, for datastore threads) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


async def waiting(cache: RegistryCache, clock: FakeClock) -> None:
    """Wait until the run loop has finished its work and sleeps on ``clock`` again."""
    await until(lambda: cache.started and clock.sleepers == 1)


async def test_start_loads_entries_and_node_selectors(
    datastore: DataStore, fake_clock: FakeClock
) -> None:
    await datastore.create_entry(new_entry("/direct", AGENT_A))
    await datastore.create_entry(new_entry("/nodes/east", SERVER, REGION))
    await datastore.create_entry(new_entry("/via-alias", sid("/nodes/east")))
    await datastore.set_node_selectors(AGENT_A, (REGION,))
    cache = RegistryCache(datastore, TD, fake_clock)
    started_before = cache.started

    await cache.start()

    assert not started_before
    assert cache.started
    assert cache.last_event_id == await datastore.last_change_event_id()
    assert paths(cache.authorized_entries(AGENT_A)) == ["/direct", "/via-alias"]
    assert cache.authorized_entries(AGENT_B) == ()


async def test_refresh_applies_entry_create_update_delete(
    datastore: DataStore, fake_clock: FakeClock
) -> None:
    kept = await datastore.create_entry(new_entry("/kept", AGENT_A))
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()

    created = await datastore.create_entry(new_entry("/created", AGENT_A))
    child = await datastore.create_entry(new_entry("/child", sid("/created")))
    assert paths(cache.authorized_entries(AGENT_A)) == ["/kept"]
    assert await cache.refresh() == 2
    assert paths(cache.authorized_entries(AGENT_A)) == ["/kept", "/created", "/child"]

    # Re-parent the subtree to another agent.
    await datastore.update_entry(replace(created, parent_id=AGENT_B))
    await cache.refresh()
    assert paths(cache.authorized_entries(AGENT_A)) == ["/kept"]
    assert paths(cache.authorized_entries(AGENT_B)) == ["/created", "/child"]
    refreshed = cache.get_entry(created.id)
    assert refreshed is not None
    assert refreshed.revision_number == 1

    await datastore.delete_entry(child.id)
    await datastore.delete_entry(kept.id)
    await cache.refresh()
    assert cache.authorized_entries(AGENT_A) == ()
    assert paths(cache.authorized_entries(AGENT_B)) == ["/created"]
    assert cache.get_entry(child.id) is None


async def test_refresh_applies_node_changes(datastore: DataStore, fake_clock: FakeClock) -> None:
    await datastore.create_entry(new_entry("/nodes/db", SERVER, REGION, TAG))
    await datastore.create_entry(new_entry("/db", sid("/nodes/db")))
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    assert cache.authorized_entries(AGENT_A) == ()

    await datastore.create_attested_node(
        AttestedNode(spiffe_id=AGENT_A, attestation_type="aws_iid", selectors=(REGION,))
    )
    await cache.refresh()
    assert cache.authorized_entries(AGENT_A) == ()

    await datastore.set_node_selectors(AGENT_A, (REGION, TAG))
    await cache.refresh()
    assert paths(cache.authorized_entries(AGENT_A)) == ["/db"]

    await datastore.delete_attested_node(AGENT_A)
    await cache.refresh()
    assert cache.authorized_entries(AGENT_A) == ()


async def test_refresh_without_changes_reads_nothing_and_keeps_the_revision(
    datastore: DataStore, fake_clock: FakeClock
) -> None:
    await datastore.create_entry(new_entry("/w", AGENT_A))
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    revision = cache.revision
    assert await cache.refresh() == 0
    assert cache.revision == revision


async def test_expired_entries_are_not_authorized(
    datastore: DataStore, fake_clock: FakeClock
) -> None:
    expires_at = fake_clock.now() + timedelta(seconds=30)
    await datastore.create_entry(new_entry("/short", AGENT_A, expires_at=expires_at))
    await datastore.create_entry(new_entry("/long", AGENT_A))
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    assert paths(cache.authorized_entries(AGENT_A)) == ["/short", "/long"]

    await fake_clock.advance(31)

    assert paths(cache.authorized_entries(AGENT_A)) == ["/long"]
    # Still cached, just not authorized.
    assert len(cache.index) == 2


async def test_refresh_before_start_loads_everything(
    datastore: DataStore, fake_clock: FakeClock
) -> None:
    await datastore.create_entry(new_entry("/w", AGENT_A))
    cache = RegistryCache(datastore, TD, fake_clock)
    assert await cache.refresh() == 0
    assert cache.started
    assert paths(cache.authorized_entries(AGENT_A)) == ["/w"]


async def test_events_are_read_in_batches(datastore: DataStore, fake_clock: FakeClock) -> None:
    cache = RegistryCache(datastore, TD, fake_clock, event_batch=2)
    await cache.start()
    for number in range(5):
        await datastore.create_entry(new_entry(f"/w{number}", AGENT_A))
    assert await cache.refresh() == 5
    assert paths(cache.authorized_entries(AGENT_A)) == [f"/w{n}" for n in range(5)]
    assert cache.last_event_id == await datastore.last_change_event_id()


async def test_many_changes_trigger_a_full_reload(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    datastore = as_datastore(fake_store)
    cache = RegistryCache(datastore, TD, fake_clock, reload_threshold=2)
    await cache.start()
    for number in range(3):
        await datastore.create_entry(new_entry(f"/w{number}", AGENT_A))
    await cache.refresh()
    assert fake_store.reads["list_all_entries"] == 2
    assert fake_store.reads["get_entry"] == 0
    assert len(cache.authorized_entries(AGENT_A)) == 3

    await datastore.create_entry(new_entry("/one-more", AGENT_A))
    await cache.refresh()
    assert fake_store.reads["get_entry"] == 1
    assert fake_store.reads["list_all_entries"] == 2


async def test_a_write_during_the_full_read_is_not_lost(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    racing = new_entry("/racing", AGENT_A, id="racing")
    fake_store.during_full_read = lambda: fake_store.write_now(racing)
    cache = RegistryCache(as_datastore(fake_store), TD, fake_clock)
    await cache.start()
    # The snapshot was taken before the write: not there yet, but its event is still ahead.
    assert cache.authorized_entries(AGENT_A) == ()
    assert await cache.refresh() == 1
    assert paths(cache.authorized_entries(AGENT_A)) == ["/racing"]


async def test_run_refreshes_on_each_tick_of_the_clock(
    datastore: DataStore, fake_clock: FakeClock
) -> None:
    cache = RegistryCache(datastore, TD, fake_clock)
    task = asyncio.create_task(cache.run(fake_clock, timedelta(seconds=5)))
    try:
        await waiting(cache, fake_clock)
        await datastore.create_entry(new_entry("/w", AGENT_A))

        await fake_clock.advance(4)
        await waiting(cache, fake_clock)
        assert cache.authorized_entries(AGENT_A) == ()

        await fake_clock.advance(1)
        await until(lambda: bool(cache.authorized_entries(AGENT_A)))
        assert paths(cache.authorized_entries(AGENT_A)) == ["/w"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_poke_refreshes_without_waiting_for_the_interval(
    datastore: DataStore, fake_clock: FakeClock
) -> None:
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    start = fake_clock.now()
    task = asyncio.create_task(cache.run(interval=3600))
    try:
        await waiting(cache, fake_clock)
        await datastore.create_entry(new_entry("/w", AGENT_A))
        cache.poke()
        await until(lambda: bool(cache.authorized_entries(AGENT_A)))
        assert paths(cache.authorized_entries(AGENT_A)) == ["/w"]
        assert fake_clock.now() == start
        await waiting(cache, fake_clock)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_survives_an_unavailable_datastore(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    datastore = as_datastore(fake_store)
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    task = asyncio.create_task(cache.run(interval=5))
    try:
        await waiting(cache, fake_clock)
        await datastore.create_entry(new_entry("/w", AGENT_A))
        fake_store.unavailable = True
        await fake_clock.advance(5)
        await waiting(cache, fake_clock)
        assert cache.authorized_entries(AGENT_A) == ()
        assert not task.done()

        fake_store.unavailable = False
        await fake_clock.advance(5)
        await until(lambda: bool(cache.authorized_entries(AGENT_A)))
        assert paths(cache.authorized_entries(AGENT_A)) == ["/w"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_rejects_a_non_positive_interval(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    cache = RegistryCache(as_datastore(fake_store), TD, fake_clock)
    with pytest.raises(InvalidArgumentError, match=r"^interval 0\.0s must be positive$"):
        await cache.run(interval=timedelta(0))


def test_constructor_rejects_bad_batch_sizes(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^event_batch 0 must be at least 1$"):
        RegistryCache(as_datastore(fake_store), TD, fake_clock, event_batch=0)
    with pytest.raises(InvalidArgumentError, match=r"^reload_threshold 0 must be at least 1$"):
        RegistryCache(as_datastore(fake_store), TD, fake_clock, reload_threshold=0)


async def test_a_node_event_with_an_invalid_id_is_skipped(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    datastore = as_datastore(fake_store)
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    fake_store.events.append(ChangeEvent(1, ChangeKind.NODE, "not-a-spiffe-id", fake_clock.now()))
    await datastore.set_node_selectors(AGENT_A, (REGION,))
    assert await cache.refresh() == 2
    assert cache.index.node_selectors(AGENT_A) == frozenset({REGION})
    assert cache.last_event_id == 2


async def test_reload_rebuilds_from_a_full_read(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    datastore = as_datastore(fake_store)
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    # A change whose event is gone (pruned before the cache read it) only a reload can see.
    fake_store.write_now(new_entry("/unseen", AGENT_A, id="unseen"))
    fake_store.events.clear()
    assert await cache.refresh() == 0
    assert cache.authorized_entries(AGENT_A) == ()
    await cache.reload()
    assert paths(cache.authorized_entries(AGENT_A)) == ["/unseen"]


async def test_a_changed_signal_refreshes_without_waiting_for_the_interval(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    """Another server wrote: the datastore's signal, not this server, wakes the cache."""
    datastore = as_datastore(fake_store)
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    task = asyncio.create_task(cache.run(interval=3600))
    try:
        await waiting(cache, fake_clock)
        await datastore.create_entry(new_entry("/w", AGENT_A))
        cache.hear(ChangeSignal.CHANGED)
        await until(lambda: bool(cache.authorized_entries(AGENT_A)))
        assert fake_store.reads["list_all_entries"] == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_resync_signal_reloads_in_full_and_retries_until_it_can(
    fake_store: FakeDataStore, fake_clock: FakeClock
) -> None:
    """Notifications were lost: a change whose event was pruned meanwhile is still found."""
    datastore = as_datastore(fake_store)
    cache = RegistryCache(datastore, TD, fake_clock)
    await cache.start()
    task = asyncio.create_task(cache.run(interval=5))
    try:
        await waiting(cache, fake_clock)
        fake_store.write_now(new_entry("/unseen", AGENT_A, id="unseen"))
        fake_store.events.clear()
        fake_store.unavailable = True
        cache.hear(ChangeSignal.RESYNC)
        await waiting(cache, fake_clock)
        assert cache.authorized_entries(AGENT_A) == ()

        fake_store.unavailable = False
        await fake_clock.advance(5)  # the failed reload is tried again at the next tick
        await until(lambda: bool(cache.authorized_entries(AGENT_A)))
        assert paths(cache.authorized_entries(AGENT_A)) == ["/unseen"]
        assert fake_store.reads["list_all_entries"] == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
