"""A datastore that reports changes refreshes the registry cache without waiting for its
interval; one that cannot is left to the interval."""

from __future__ import annotations

import asyncio

from pyspire.registry.cache import RegistryCache
from pyspire.registry.change_watch import follow_changes
from pyspire.server.runtime import _change_watch
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.datastore import ChangeKind, ChangeWatchingDataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import FakeDataStore, as_datastore

TD = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/a")


class WatchingFakeDataStore(FakeDataStore):
    """The fake, telling waiters when its change feed grows (as another server's write
    would be seen by a shared datastore)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.changed = asyncio.Event()
        self.waits = 0

    def _event(self, kind: ChangeKind, object_id: str) -> None:
        super()._event(kind, object_id)
        self.changed.set()

    async def wait_for_change(self, after_event_id: int) -> int:
        self.waits += 1
        while len(self.events) <= after_event_id:
            self.changed.clear()
            await self.changed.wait()
        return len(self.events)


def _entry(path: str) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.from_path(TD, path), parent_id=AGENT, selectors=(Selector("p", path),)
    )


async def _until(condition: object, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


async def test_a_reported_change_refreshes_the_cache_before_its_interval(
    fake_clock: FakeClock,
) -> None:
    store = WatchingFakeDataStore(fake_clock)
    cache = RegistryCache(as_datastore(store), TD, fake_clock)
    await cache.start()
    start = fake_clock.now()
    tasks = [
        asyncio.create_task(cache.run(interval=3600)),
        asyncio.create_task(follow_changes(store, cache)),
    ]
    try:
        for path in ("/one", "/two"):
            await store.create_entry(_entry(path))
            await _until(
                lambda p=path: p in {e.spiffe_id.path for e in cache.authorized_entries(AGENT)}
            )
        assert fake_clock.now() == start
        assert store.waits >= 3
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_the_server_watches_only_datastores_that_report_changes(fake_clock: FakeClock) -> None:
    watching = WatchingFakeDataStore(fake_clock)
    plain = FakeDataStore(fake_clock)
    assert isinstance(watching, ChangeWatchingDataStore)
    cache = RegistryCache(as_datastore(plain), TD, fake_clock)
    assert list(_change_watch(as_datastore(watching), cache)) == ["change-watch"]
    assert _change_watch(as_datastore(plain), cache) == {}
