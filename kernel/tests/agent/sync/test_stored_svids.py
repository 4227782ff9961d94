"""Entries marked store_svid: kept out of the workload cache, minted by the sync manager, and
turned into puts and deletes for the SVID stores their selectors name."""

from __future__ import annotations

from datetime import timedelta

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.agent.cache import CacheContents, WorkloadCache
from pyspire.agent.stored_svids import (
    DeleteSvid,
    PutSvid,
    StoredSvidCache,
    StoreTarget,
    store_target,
)
from pyspire.agent.sync import SyncManager
from pyspire.agent.tainted import TAINT_SPREAD
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .fakes import FakeCa, FakeServerApi, entry

STORES = ("vault", "files")
WEB = StoreTarget("vault", ("name:web",))


@pytest.fixture
def stored(fake_clock: FakeClock) -> StoredSvidCache:
    return StoredSvidCache(STORES, fake_clock)


@pytest.fixture
def syncer(
    server: FakeServerApi, cache: WorkloadCache, stored: StoredSvidCache, fake_clock: FakeClock
) -> SyncManager:
    return SyncManager(server, cache, fake_clock, interval=5, stored=stored)


def _puts(stored: StoredSvidCache) -> dict[StoreTarget, PutSvid]:
    return {op.target: op for op in stored.pending() if isinstance(op, PutSvid)}


def _deletes(stored: StoredSvidCache) -> list[StoreTarget]:
    return [op.target for op in stored.pending() if isinstance(op, DeleteSvid)]


def _deliver_all(stored: StoredSvidCache) -> None:
    for operation in stored.pending():
        stored.delivered(operation)


def test_target_is_the_one_selector_type_and_its_values() -> None:
    stored_entry = entry("web", selectors=["vault:name:web", "vault:ttl:1h"], store_svid=True)
    assert store_target(stored_entry, STORES) == StoreTarget("vault", ("name:web", "ttl:1h"))


@pytest.mark.parametrize(
    ("selectors", "problem"),
    [
        ((), "found none"),
        (("vault:name:web", "unix:uid:0"), "found unix, vault"),
        (("s3:bucket:web",), "no svid store named 's3' is configured"),
    ],
)
def test_unusable_selectors_are_named(selectors: tuple[str, ...], problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem):
        store_target(entry("web", selectors=selectors, store_svid=True), STORES)


async def test_stored_entry_is_minted_but_never_served(
    server: FakeServerApi, cache: WorkloadCache, stored: StoredSvidCache, syncer: SyncManager
) -> None:
    partner = TrustDomain("partner.test")
    partner_ca = FakeCa(server.clock, partner)
    server.federated[partner] = Bundle(
        trust_domain=partner, x509_authorities=(partner_ca.authority,)
    )
    server.add(
        entry(
            "web", selectors=["vault:name:web"], store_svid=True, federates_with=["partner.test"]
        ),
        entry("app", created=1),
    )
    report = await syncer.sync_now()

    assert report.issued == 2
    assert [item.entry.id for item in cache.snapshot().identities] == ["app"]
    assert [item.id for item in cache.entries()] == ["app"]
    assert stored.svid_count == 1
    put = _puts(stored)[WEB]
    svid = put.svid
    assert put.entry_id == "web"
    assert str(svid.spiffe_id) == "spiffe://example.org/web"
    assert svid.metadata == ("name:web",)
    assert svid.bundle == (server.ca.authority.der,)
    assert dict(svid.federated_bundles) == {partner: (partner_ca.authority.der,)}
    leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
    leaf.verify_directly_issued_by(server.ca.certificate)
    assert svid.expires_at == leaf.not_valid_after_utc
    key = serialization.load_der_private_key(svid.private_key, None)
    assert key.public_key() == leaf.public_key()


async def test_entry_that_names_no_store_gets_no_svid_and_is_logged_once(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager
) -> None:
    server.add(entry("web", selectors=["s3:bucket:web"], store_svid=True))
    with structlog.testing.capture_logs() as logs:
        await syncer.sync_now()
        server.add(entry("other", selectors=["vault:name:other"], store_svid=True))
        await syncer.sync_now()
    assert server.batches == [["other"]]
    complaints = [log for log in logs if log.get("entry_id") == "web"]
    assert len(complaints) == 1
    assert complaints[0]["log_level"] == "error"
    assert "no svid store named 's3'" in complaints[0]["reason"]
    assert list(_puts(stored)) == [StoreTarget("vault", ("name:other",))]


async def test_two_entries_on_one_target_the_older_wins(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager
) -> None:
    server.add(
        entry("young", selectors=["vault:name:web"], store_svid=True, created=5),
        entry("old", selectors=["vault:name:web"], store_svid=True, created=1),
    )
    await syncer.sync_now()
    assert _puts(stored)[WEB].entry_id == "old"
    assert server.batches == [["old"]]


async def test_rotation_puts_the_new_svid(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    await syncer.sync_now()
    first = _puts(stored)[WEB].svid
    _deliver_all(stored)
    assert stored.pending() == []

    await fake_clock.advance(timedelta(minutes=31))  # past half of the 1h lifetime
    report = await syncer.sync_now()
    assert report.issued == 1
    second = _puts(stored)[WEB].svid
    assert second.cert_chain != first.cert_chain
    assert second.private_key != first.private_key


async def test_bundle_change_puts_again(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager
) -> None:
    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    await syncer.sync_now()
    _deliver_all(stored)
    server.rotate_ca(keep_old=True)
    await syncer.sync_now()
    assert len(_puts(stored)[WEB].svid.bundle) == 2


async def test_deleted_entry_is_deleted_from_its_store(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager
) -> None:
    server.add(
        entry("web", selectors=["vault:name:web"], store_svid=True),
        entry("never", selectors=["files:path:never"], store_svid=True, created=1),
    )
    await syncer.sync_now()
    stored.delivered(_puts(stored)[WEB])  # "never" was never delivered
    del server.entries["web"], server.entries["never"]
    await syncer.sync_now()
    assert stored.pending() == [DeleteSvid(WEB)]
    assert stored.svid_count == 0
    stored.delivered(DeleteSvid(WEB))
    assert stored.pending() == []
    assert stored.delivered_targets() == ()


async def test_changed_selectors_move_the_svid(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager
) -> None:
    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    await syncer.sync_now()
    _deliver_all(stored)
    moved = entry("web", selectors=["files:path:web"], store_svid=True, revision=2)
    server.add(moved)
    stored.update(list(server.entries.values()), server.bundle, {})
    # The held SVID was minted for revision 1: nothing is put before its successor.
    assert stored.pending() == [DeleteSvid(WEB)]
    await syncer.sync_now()
    operations = stored.pending()
    assert operations[0] == DeleteSvid(WEB)
    assert isinstance(operations[1], PutSvid)
    assert operations[1].target == StoreTarget("files", ("path:web",))


async def test_refused_put_waits_for_a_new_svid(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    await syncer.sync_now()
    put = _puts(stored)[WEB]
    stored.refused(put)
    assert stored.pending() == []
    await fake_clock.advance(timedelta(minutes=31))
    await syncer.sync_now()
    assert list(_puts(stored)) == [WEB]


async def test_expired_svid_is_not_put(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    await syncer.sync_now()
    await fake_clock.advance(timedelta(hours=2))
    assert stored.pending() == []


async def test_targets_of_an_earlier_run_wait_for_the_first_sync(
    server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock
) -> None:
    gone = StoreTarget("vault", ("name:gone",))
    unconfigured = StoreTarget("s3", ("bucket:old",))
    with structlog.testing.capture_logs() as logs:
        stored = StoredSvidCache(STORES, fake_clock, delivered=[WEB, gone, unconfigured])
    assert any(log.get("store") == "s3" for log in logs)
    assert stored.delivered_targets() == (gone, WEB)
    assert stored.pending() == []

    server.add(entry("web", selectors=["vault:name:web"], store_svid=True))
    syncer = SyncManager(server, cache, fake_clock, interval=5, stored=stored)
    await syncer.sync_now()
    operations = stored.pending()
    assert operations[0] == DeleteSvid(gone)
    assert isinstance(operations[1], PutSvid)
    assert operations[1].target == WEB  # its content is unknown: put again


async def test_workload_cache_never_restores_stored_entries(
    server: FakeServerApi, cache: WorkloadCache, stored: StoredSvidCache, syncer: SyncManager
) -> None:
    server.add(entry("app"))
    await syncer.sync_now()
    kept = cache.contents()
    stored_entry = entry("web", selectors=["vault:name:web"], store_svid=True, created=1)
    restored = WorkloadCache(server, server.clock)
    restored.restore(
        CacheContents(
            entries=(*kept.entries, stored_entry),
            issued=kept.issued,
            bundle=kept.bundle,
            federated_bundles=kept.federated_bundles,
        )
    )
    assert [item.id for item in restored.entries()] == ["app"]
    await restored.close()


async def test_stored_svids_of_a_tainted_authority_are_reminted_spread_over_the_window(
    server: FakeServerApi, stored: StoredSvidCache, syncer: SyncManager, fake_clock: FakeClock
) -> None:
    """As workload SVIDs: each stored SVID of a tainted CA comes due at its own moment within
    TAINT_SPREAD of the agent seeing the taint, not all at the first sync."""
    server.add(
        *(
            entry(f"s{index:03}", selectors=[f"vault:name:s{index:03}"], store_svid=True)
            for index in range(200)
        )
    )
    await syncer.sync_now()
    server.rotate_ca(keep_old=True, taint_old=True)
    tainted_at = fake_clock.now()
    first = (await syncer.sync_now()).issued
    assert first <= 20  # the taint is seen: only the earliest in the window go at once

    per_sync: list[int] = []
    while fake_clock.now() - tainted_at < TAINT_SPREAD:
        await fake_clock.advance(1)
        per_sync.append((await syncer.sync_now()).issued)
    assert first + sum(per_sync) == 200, per_sync
    assert max(per_sync) <= 50, per_sync  # about a tenth of them each second
    assert len([count for count in per_sync if count]) >= 8, per_sync

    puts = _puts(stored)
    assert len(puts) == 200
    for put in puts.values():
        leaf = x509.load_der_x509_certificate(put.svid.cert_chain[0])
        leaf.verify_directly_issued_by(server.ca.certificate)  # all by the new CA
