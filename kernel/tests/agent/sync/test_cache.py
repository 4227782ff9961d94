"""The workload cache: snapshots, watching, and the X509-SVID size bound."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pyspire.agent.cache import IDLE_BEFORE_EVICTION, StaleReason, WorkloadCache
from pyspire.agent.identities import IdentitySource
from pyspire.agent.sync import SyncManager
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .fakes import TRUST_DOMAIN, FakeServerApi, entry


def _ids(cache: WorkloadCache) -> list[str]:
    return [identity.entry.id for identity in cache.snapshot().identities]


def _selectors(*values: str) -> frozenset[Selector]:
    return frozenset(Selector.parse(value) for value in values)


def test_cache_is_an_identity_source(cache: WorkloadCache) -> None:
    source: IdentitySource = cache
    assert source.snapshot().revision == 0


async def test_snapshot_is_cached_per_revision_and_immutable(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    partner = TrustDomain("partner.test")
    server.federated[partner] = Bundle(trust_domain=partner)
    server.add(entry("web", federates_with=["partner.test"]))
    await manager.sync_now()
    first = cache.snapshot()
    assert cache.snapshot() is first
    with pytest.raises(TypeError):
        first.federated_bundles[partner] = Bundle(trust_domain=partner)  # type: ignore[index]
    server.bump("web")
    await manager.sync_now()
    second = cache.snapshot()
    assert second.revision > first.revision
    assert first.identities[0].entry.revision_number == 1
    assert second.identities[0].entry.revision_number == 2


async def test_watch_gives_current_snapshot_at_once_then_changes(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    stream = cache.watch()
    initial = await asyncio.wait_for(anext(stream), 1)
    assert initial.revision == 0
    assert initial.identities == ()

    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert not pending.done()
    assert cache.watchers == 1

    cache.update([], server.bundle, {})
    with_bundle = await asyncio.wait_for(pending, 1)
    assert with_bundle.revision == 1
    assert with_bundle.bundle == server.bundle

    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    server.add(entry("web"))
    await manager.sync_now()
    # First the new entry (its SVID is being minted off the event loop), then its SVID.
    known = await asyncio.wait_for(pending, 1)
    assert known.revision == 2
    assert [item.id for item in known.entries or ()] == ["web"]
    assert known.identities == ()
    changed = await asyncio.wait_for(anext(stream), 1)
    assert changed.revision == cache.snapshot().revision == 3
    assert [identity.entry.id for identity in changed.identities] == ["web"]
    await stream.aclose()
    assert cache.watchers == 0


async def test_slow_watcher_skips_to_the_latest(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    stream = cache.watch()
    await anext(stream)
    server.add(entry("a"))
    await manager.sync_now()
    server.add(entry("b", created=1))
    await manager.sync_now()
    server.bump("a")
    await manager.sync_now()
    latest = await asyncio.wait_for(anext(stream), 1)
    assert latest is cache.snapshot()
    await stream.aclose()


async def test_cancelled_watcher_leaves_no_waiter(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    seen: list[int] = []

    async def consume() -> None:
        async for snapshot in cache.watch():
            seen.append(snapshot.revision)

    consumers = [asyncio.create_task(consume()) for _ in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cache.watchers == 3
    assert seen == [0, 0, 0]
    consumers[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumers[0]
    assert cache.watchers == 2

    # The others still see changes after one was cancelled.
    server.add(entry("web"))
    await manager.sync_now()
    for _ in range(5):
        await asyncio.sleep(0)
    assert seen.count(cache.snapshot().revision) == 2

    for consumer in consumers[1:]:
        consumer.cancel()
    await asyncio.gather(*consumers[1:], return_exceptions=True)
    assert cache.watchers == 0


async def test_bundle_change_notifies_watchers(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    await manager.sync_now()
    stream = cache.watch()
    first = await anext(stream)
    server.rotate_ca(keep_old=True)
    await manager.sync_now()
    second = await asyncio.wait_for(anext(stream), 1)
    assert second.revision > first.revision
    assert second.bundle == server.bundle
    await stream.aclose()


async def test_size_bound_limits_preminting_oldest_first(
    server: FakeServerApi, fake_clock: FakeClock
) -> None:
    cache = WorkloadCache(server, fake_clock, x509_svid_cache_max_size=3)
    manager = SyncManager(server, cache, fake_clock)
    server.add(*(entry(f"e{index}", created=10 - index) for index in range(5)))
    await manager.sync_now()
    # Oldest entries first: e4 (created 6), e3, e2.
    assert _ids(cache) == ["e4", "e3", "e2"]
    assert cache.svid_count == 3
    assert len(cache.entries()) == 5
    # Stable: the next sync mints nothing new.
    assert (await manager.sync_now()).issued == 0
    await cache.close()


async def test_wanted_entry_gets_svid_beyond_the_bound(
    server: FakeServerApi, fake_clock: FakeClock
) -> None:
    cache = WorkloadCache(server, fake_clock, x509_svid_cache_max_size=2)
    manager = SyncManager(server, cache, fake_clock)
    server.add(
        entry("a", created=1, selectors=["unix:uid:1"]),
        entry("b", created=2, selectors=["unix:uid:2"]),
        entry("c", created=3, selectors=["unix:uid:3"]),
    )
    await manager.sync_now()
    assert _ids(cache) == ["a", "b"]

    with cache.demand(_selectors("unix:uid:3", "unix:pid:9")):
        assert cache.snapshot().view(_selectors("unix:uid:3")).complete is False
        stale = cache.stale_entries(fake_clock.now())
        assert [(item.entry.id, item.reason) for item in stale] == [("c", StaleReason.MISSING)]
        await manager.sync_now()
        assert _ids(cache) == ["a", "b", "c"]
        # Over the bound: the least recently used unsubscribed SVID goes, never c.
        with cache.demand(_selectors("unix:uid:1")):
            pass
        await fake_clock.advance(1)
        await manager.sync_now()
        assert _ids(cache) == ["a", "c"]
        assert cache.svid_count == 2
        # b is not re-minted while the cache is full.
        assert (await manager.sync_now()).issued == 0

    await cache.close()


async def test_touch_reports_missing_identities_and_asks_for_a_sync(
    server: FakeServerApi, fake_clock: FakeClock
) -> None:
    cache = WorkloadCache(server, fake_clock, x509_svid_cache_max_size=1)
    calls: list[str] = []
    cache.add_demand_listener(lambda: calls.append("demand"))
    server.add(
        entry("a", created=1, selectors=["unix:uid:1"]),
        entry("b", created=2, selectors=["unix:uid:2"]),
    )
    manager = SyncManager(server, cache, fake_clock)
    await manager.sync_now()
    assert cache.touch(_selectors("unix:uid:1")) is True
    assert calls == []
    assert cache.touch(_selectors("unix:uid:2")) is False
    assert calls == ["demand"]
    await manager.sync_now()
    assert "b" in _ids(cache)
    assert cache.touch(_selectors("unix:uid:2")) is True
    await cache.close()


async def test_never_used_svids_are_evicted_newest_entry_first(
    server: FakeServerApi, fake_clock: FakeClock
) -> None:
    cache = WorkloadCache(server, fake_clock, x509_svid_cache_max_size=2)
    manager = SyncManager(server, cache, fake_clock)
    server.add(
        entry("a", created=1, selectors=["unix:uid:1"]),
        entry("b", created=2, selectors=["unix:uid:2"]),
        entry("c", created=3, selectors=["unix:uid:3"]),
    )
    await manager.sync_now()
    assert cache.touch(_selectors("unix:uid:3")) is False
    await manager.sync_now()
    assert _ids(cache) == ["a", "b", "c"]
    await manager.sync_now()
    # c was used; of the never-used a and b, the newer entry (b) goes first.
    assert _ids(cache) == ["a", "c"]
    await cache.close()


async def test_cache_refuses_a_zero_bound(server: FakeServerApi, fake_clock: FakeClock) -> None:
    with pytest.raises(InvalidArgumentError, match="x509_svid_cache_max_size must be at least 1"):
        WorkloadCache(server, fake_clock, x509_svid_cache_max_size=0)


async def test_store_discards_svids_of_entries_gone_meanwhile(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    issued = cache.issued("web")
    assert issued is not None
    cache.update([], server.bundle, {})
    revision = cache.snapshot().revision
    assert cache.store([issued]) == 0
    assert cache.snapshot().revision == revision
    assert cache.snapshot().identities == ()


async def test_unchanged_sync_does_not_bump_revision(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    revision = cache.snapshot().revision
    for _ in range(3):
        await fake_clock.advance(timedelta(seconds=5))
        await manager.sync_now()
    assert cache.snapshot().revision == revision
    assert cache.snapshot().bundle is not None
    assert cache.snapshot().bundle.trust_domain == TRUST_DOMAIN  # type: ignore[union-attr]


async def test_an_svid_is_dropped_the_moment_it_expires_and_watchers_are_told(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web", x509_svid_ttl=90))
    await manager.sync_now()
    issued = cache.issued("web")
    assert issued is not None
    expiry = asyncio.create_task(cache.run())
    stream = cache.watch()
    try:
        assert _ids(cache) == ["web"]
        assert [i.entry.id for i in (await anext(stream)).identities] == ["web"]
        # The server is away: no renewal at half-life; the SVID is served until its notAfter.
        await fake_clock.set(issued.not_after - timedelta(seconds=1))
        assert _ids(cache) == ["web"]
        following = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        assert not following.done()
        await fake_clock.set(issued.not_after)
        dropped = await asyncio.wait_for(following, 1)
        assert dropped.identities == ()
        assert [item.id for item in dropped.entries or ()] == ["web"]
        assert cache.issued("web") is None
        assert [item.reason for item in cache.stale_entries(fake_clock.now())] == [
            StaleReason.MISSING
        ]
    finally:
        await stream.aclose()
        expiry.cancel()
        await asyncio.gather(expiry, return_exceptions=True)


async def test_a_snapshot_never_holds_an_expired_svid(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    # Even with no expiry task running (it may be late), a snapshot leaves expired SVIDs out.
    server.add(entry("web", x509_svid_ttl=90), entry("db", created=1))
    await manager.sync_now()
    web = cache.issued("web")
    assert web is not None
    await fake_clock.set(web.not_after)
    assert _ids(cache) == ["db"]


async def test_svids_used_recently_are_not_evicted_over_the_bound(
    server: FakeServerApi, fake_clock: FakeClock
) -> None:
    cache = WorkloadCache(server, fake_clock, x509_svid_cache_max_size=2)
    manager = SyncManager(server, cache, fake_clock)
    server.add(*(entry(f"e{index}", created=index) for index in range(3)))
    await manager.sync_now()
    with cache.demand(_selectors("unix:uid:1000")):
        await manager.mint_now()
        assert _ids(cache) == ["e0", "e1", "e2"]
    # The one-shot caller hung up: its SVIDs stay while it may come back.
    await fake_clock.advance(timedelta(minutes=59))
    await manager.sync_now()
    assert _ids(cache) == ["e0", "e1", "e2"]
    # Idle for longer than the period: back within the bound, newest entry first.
    await fake_clock.advance(IDLE_BEFORE_EVICTION - timedelta(minutes=58))
    await manager.sync_now()
    assert _ids(cache) == ["e0", "e1"]
    await cache.close()
