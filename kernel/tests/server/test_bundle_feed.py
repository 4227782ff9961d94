"""The bundle feed hears of writes through this server at once and of other writers at the next
refresh, and tells its subscribers only of real changes, on a real SQLite datastore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig

from pyspire.server.bundle_feed import (
    BUNDLE_REFRESH,
    UNVERIFIED_PEER_RECHECK,
    BundleFeed,
    watch_bundle_writes,
)
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock, TestAuthority

from .delivery import TD, running, settle, until

FEDERATED = TrustDomain("partner.test")


@pytest.fixture
async def datastore(host_services: HostServices) -> AsyncIterator[SqliteDataStore]:
    store = SqliteDataStore()
    await store.configure(SqliteDataStoreConfig(), host_services)
    await store.create_bundle(Bundle(TD, (X509Authority(b"root-1"),), sequence_number=1))
    yield store
    await store.close()


class Heard:
    def __init__(self) -> None:
        self.bundles: list[Bundle] = []
        self.wakes = 0

    def __call__(self, bundle: Bundle) -> None:
        self.bundles.append(bundle)

    @property
    def sequences(self) -> list[int]:
        return [bundle.sequence_number for bundle in self.bundles]


async def feed_for(datastore: SqliteDataStore, clock: FakeClock) -> tuple[BundleFeed, Heard]:
    feed = BundleFeed(datastore, TD, clock)
    heard = Heard()
    feed.subscribe(heard)
    assert (await feed.load()).sequence_number == 1
    return feed, heard


async def test_a_write_through_the_server_is_heard_at_once(
    datastore: SqliteDataStore, fake_clock: FakeClock
) -> None:
    feed, heard = await feed_for(datastore, fake_clock)
    watched = watch_bundle_writes(datastore, TD, feed.wake)
    async with running(feed.run):
        await watched.append_bundle(Bundle(TD, (X509Authority(b"root-2"),)))
        await until(lambda: heard.sequences == [2])
        # A write that changes nothing wakes the feed but is no event.
        await watched.append_bundle(Bundle(TD, (X509Authority(b"root-2"),)))
        await settle()
        assert heard.sequences == [2]
    assert feed.current == heard.bundles[-1]
    assert [a.der for a in heard.bundles[-1].x509_authorities] == [b"root-1", b"root-2"]


async def test_every_kind_of_bundle_write_wakes_the_feed_for_our_trust_domain_only(
    datastore: SqliteDataStore, fake_clock: FakeClock
) -> None:
    wakes: list[str] = []
    watched = watch_bundle_writes(datastore, TD, lambda: wakes.append("woken"))
    live = TestAuthority(TD, now=fake_clock.now())
    expired = TestAuthority(TD, now=fake_clock.now() - timedelta(days=2), ttl=timedelta(days=1))
    await watched.append_bundle(Bundle(TD, (expired.x509_authority,)))
    await watched.update_bundle(TD, lambda current: current or Bundle(TD))
    await watched.set_bundle(Bundle(TD, (live.x509_authority, expired.x509_authority)))
    assert await watched.prune_bundle(TD, fake_clock.now())
    assert not await watched.prune_bundle(TD, fake_clock.now())  # nothing pruned: no wake
    assert len(wakes) == 4
    await watched.create_bundle(Bundle(FEDERATED, (X509Authority(b"partner"),)))
    await watched.append_bundle(Bundle(FEDERATED, (X509Authority(b"partner-2"),)))
    await watched.delete_bundle(FEDERATED)
    assert len(wakes) == 4
    # Everything else is the datastore's own.
    assert await watched.count_bundles() == 1
    assert watched.list_entries == datastore.list_entries


async def test_another_writer_is_heard_at_the_next_refresh(
    datastore: SqliteDataStore, fake_clock: FakeClock
) -> None:
    feed, heard = await feed_for(datastore, fake_clock)
    async with running(feed.run):
        await settle()
        # Another server sharing the datastore appends: nothing here was told.
        await datastore.append_bundle(Bundle(TD, (X509Authority(b"root-2"),)))
        await fake_clock.advance(BUNDLE_REFRESH - timedelta(seconds=1))
        await settle()
        assert heard.bundles == []
        await fake_clock.advance(timedelta(seconds=1))
        await until(lambda: heard.sequences == [2])
        # The next refresh finds nothing new and says nothing.
        await fake_clock.advance(BUNDLE_REFRESH)
        await settle()
        assert heard.sequences == [2]


async def test_an_unverified_peer_has_another_writer_heard_at_once_at_most_once_a_recheck(
    datastore: SqliteDataStore, fake_clock: FakeClock
) -> None:
    """A client certificate the listener could not verify may come from a CA another server
    just added (nothing tells a server on one SQLite file): the feed reads the bundle at once,
    not at its next refresh, but such peers wake it once per recheck interval at most."""
    feed, heard = await feed_for(datastore, fake_clock)
    async with running(feed.run):
        await settle()
        await datastore.append_bundle(Bundle(TD, (X509Authority(b"root-2"),)))
        feed.unverified_peer()
        await until(lambda: heard.sequences == [2])
        # Within the recheck interval another unverified peer reads nothing.
        await datastore.append_bundle(Bundle(TD, (X509Authority(b"root-3"),)))
        feed.unverified_peer()
        await settle()
        assert heard.sequences == [2]
        await fake_clock.advance(UNVERIFIED_PEER_RECHECK)
        await settle()
        assert heard.sequences == [2]  # time alone reads only at the refresh
        feed.unverified_peer()
        await until(lambda: heard.sequences == [2, 3])
