"""The sync manager against an in-memory server that signs real certificates."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from functools import partial

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pyspire.agent.cache import IssuedSvid, StaleReason, WorkloadCache
from pyspire.agent.sync import INTERVAL_JITTER, SyncManager
from pyspire.agent.tainted import TAINT_SPREAD
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, UnavailableError
from pyspire_sdk.model import X509Svid
from pyspire_sdk.plugins.key_manager import KeyType
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import eventually
from .fakes import FakeServerApi, entry, leaf


def _spki_of_private(svid: X509Svid) -> bytes:
    assert svid.private_key is not None
    key = serialization.load_der_private_key(svid.private_key, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _identity_svid(cache: WorkloadCache, entry_id: str) -> X509Svid:
    for identity in cache.snapshot().identities:
        if identity.entry.id == entry_id:
            return identity.svid
    raise AssertionError(f"no identity for {entry_id}")


async def test_first_sync_fills_the_cache(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web", created=1), entry("db", created=2))
    report = await manager.sync_now()

    assert report.entries == 2
    assert report.issued == 2
    assert report.failed == {}
    snapshot = cache.snapshot()
    assert [identity.entry.id for identity in snapshot.identities] == ["web", "db"]
    assert snapshot.bundle == server.bundle
    assert snapshot.revision > 0
    for identity in snapshot.identities:
        certificate = leaf(identity.svid)
        uris = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == [str(identity.entry.spiffe_id)]
        # The key was generated here; the server only saw its public half.
        assert _spki_of_private(identity.svid) == server.csr_public_keys[identity.entry.id]
        assert isinstance(
            serialization.load_der_private_key(identity.svid.private_key or b"", None),
            ec.EllipticCurvePrivateKey,
        )
        certificate.verify_directly_issued_by(server.ca.certificate)
    assert manager.last_success == fake_clock.now()


async def test_nothing_is_reissued_while_fresh(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    revision = cache.snapshot().revision
    await fake_clock.advance(60)
    report = await manager.sync_now()
    assert report.issued == 0
    assert server.calls["new_x509_svids"] == 1
    assert cache.snapshot().revision == revision


async def test_rotation_at_half_life_gives_new_svid_and_key_and_notifies(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    first = cache.snapshot()
    first_svid = first.identities[0].svid
    stream = cache.watch()
    assert (await anext(stream)).revision == first.revision
    certificate = leaf(first_svid)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    half_life = certificate.not_valid_before_utc + lifetime / 2

    # Just before half-life: still fresh.
    await fake_clock.set(half_life - timedelta(seconds=1))
    assert (await manager.sync_now()).issued == 0

    await fake_clock.set(half_life)
    next_snapshot = asyncio.ensure_future(anext(stream))
    report = await manager.sync_now()
    assert report.issued == 1
    rotated = await asyncio.wait_for(next_snapshot, 5)
    await stream.aclose()

    assert rotated.revision > first.revision
    new_svid = rotated.identities[0].svid
    assert leaf(new_svid).serial_number != leaf(first_svid).serial_number
    assert new_svid.private_key != first_svid.private_key
    assert _spki_of_private(new_svid) != _spki_of_private(first_svid)
    assert leaf(new_svid).not_valid_after_utc > leaf(first_svid).not_valid_after_utc


async def test_expired_svid_is_reissued(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    await fake_clock.advance(timedelta(hours=2))
    stale = cache.stale_entries(fake_clock.now())
    assert [(item.entry.id, item.reason) for item in stale] == [("web", StaleReason.EXPIRED)]
    await manager.sync_now()
    assert _identity_svid(cache, "web").expires_at > fake_clock.now()


async def test_entry_revision_change_reissues(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    server.add(entry("web"), entry("db"))
    await manager.sync_now()
    before_web = _identity_svid(cache, "web")
    before_db = _identity_svid(cache, "db")

    updated = server.bump("web")
    report = await manager.sync_now()

    assert report.issued == 1
    assert server.batches[-1] == ["web"]
    assert _identity_svid(cache, "web") != before_web
    assert _identity_svid(cache, "db") == before_db
    identity = next(i for i in cache.snapshot().identities if i.entry.id == "web")
    assert identity.entry == updated
    issued = cache.issued("web")
    assert issued is not None
    assert issued.entry_revision == updated.revision_number


async def test_removed_entry_loses_its_identity(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    server.add(entry("web"), entry("db"))
    await manager.sync_now()
    revision = cache.snapshot().revision
    del server.entries["db"]
    await manager.sync_now()
    snapshot = cache.snapshot()
    assert [identity.entry.id for identity in snapshot.identities] == ["web"]
    assert snapshot.revision > revision
    assert cache.issued("db") is None
    assert [item.id for item in cache.entries()] == ["web"]


async def test_federated_bundles_only_for_named_trust_domains(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    partner = TrustDomain("partner.test")
    other = TrustDomain("other.test")
    server.federated[partner] = Bundle(trust_domain=partner, sequence_number=3)
    server.federated[other] = Bundle(trust_domain=other, sequence_number=4)
    server.add(
        entry("web", federates_with=["partner.test", "example.org"]),
        entry("api", federates_with=["partner.test", "missing.test"]),
        entry("db"),
    )
    report = await manager.sync_now()

    assert sorted(str(td) for td in server.federated_requests) == ["missing.test", "partner.test"]
    assert report.federated_trust_domains == (partner,)
    assert dict(cache.snapshot().federated_bundles) == {partner: server.federated[partner]}

    # No entry names partner.test any more: its bundle is dropped.
    server.add(entry("web", revision=2), entry("api", revision=2))
    server.federated_requests.clear()
    await manager.sync_now()
    assert server.federated_requests == []
    assert dict(cache.snapshot().federated_bundles) == {}


async def test_federated_bundle_change_bumps_revision(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    partner = TrustDomain("partner.test")
    server.federated[partner] = Bundle(trust_domain=partner, sequence_number=1)
    server.add(entry("web", federates_with=["partner.test"]))
    await manager.sync_now()
    revision = cache.snapshot().revision
    await manager.sync_now()
    assert cache.snapshot().revision == revision
    server.federated[partner] = Bundle(trust_domain=partner, sequence_number=2)
    await manager.sync_now()
    assert cache.snapshot().revision > revision
    assert cache.snapshot().federated_bundles[partner].sequence_number == 2


async def test_partial_batch_failure_does_not_block_others(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    server.add(entry("a", created=1), entry("b", created=2), entry("c", created=3))
    server.refuse["b"] = "invalid CSR signature"
    with structlog.testing.capture_logs() as logs:
        report = await manager.sync_now()

    assert report.issued == 2
    assert report.failed == {"b": "invalid CSR signature"}
    assert [identity.entry.id for identity in cache.snapshot().identities] == ["a", "c"]
    warnings = [log for log in logs if log.get("entry_id") == "b"]
    assert len(warnings) == 1
    assert warnings[0]["reason"] == "invalid CSR signature"
    assert warnings[0]["log_level"] == "warning"

    # Retried at the next sync; only the failed entry is asked for again.
    del server.refuse["b"]
    report = await manager.sync_now()
    assert report.issued == 1
    assert server.batches[-1] == ["b"]
    assert [identity.entry.id for identity in cache.snapshot().identities] == ["a", "b", "c"]


async def test_csrs_go_in_batches(
    server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock
) -> None:
    manager = SyncManager(server, cache, fake_clock, csr_batch=2)
    server.add(*(entry(f"e{index}", created=index) for index in range(5)))
    report = await manager.sync_now()
    assert report.issued == 5
    assert server.batches == [["e0", "e1"], ["e2", "e3"], ["e4"]]
    assert cache.svid_count == 5


async def test_svid_that_does_not_match_our_key_is_refused(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    server.add(entry("web"))
    original = server.new_x509_svids

    async def swap_keys(requests):  # type: ignore[no-untyped-def]
        results = await original(requests)
        # Answer with a certificate for someone else's key.
        other = await original(
            [type(requests[0])(requests[0].entry_id, _foreign_csr(server.entries["web"]))]
        )
        return [other[0] for _ in results]

    server.new_x509_svids = swap_keys  # type: ignore[method-assign]
    report = await manager.sync_now()
    assert report.issued == 0
    assert report.failed == {"web": "x509 svid leaf does not certify the private key"}
    assert cache.snapshot().identities == ()


def _foreign_csr(registered) -> bytes:  # type: ignore[no-untyped-def]
    from pyspire.agent.sync import _make_requests

    return _make_requests(KeyType.EC_P256, [registered])[0][1]


async def test_issuer_dropped_from_bundle_reissues(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    old = _identity_svid(cache, "web")

    # New CA, old one still trusted: nothing to do yet.
    server.rotate_ca(keep_old=True)
    cache.update(list(server.entries.values()), server.bundle, {})
    assert cache.stale_entries(fake_clock.now()) == []

    server.rotate_ca(keep_old=False)
    cache.update(list(server.entries.values()), server.bundle, {})
    stale = cache.stale_entries(fake_clock.now())
    assert [(item.entry.id, item.reason) for item in stale] == [
        ("web", StaleReason.ISSUER_UNTRUSTED)
    ]
    await manager.sync_now()
    new = _identity_svid(cache, "web")
    assert new != old
    leaf(new).verify_directly_issued_by(server.ca.certificate)


async def test_tainted_issuer_reissues(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    server.rotate_ca(keep_old=True, taint_old=True)
    cache.update(list(server.entries.values()), server.bundle, {})
    await fake_clock.advance(TAINT_SPREAD)  # each SVID's turn comes within the spread
    stale = cache.stale_entries(fake_clock.now())
    assert [(item.entry.id, item.reason) for item in stale] == [("web", StaleReason.ISSUER_TAINTED)]
    assert (await manager.sync_now()).issued == 1
    assert cache.stale_entries(fake_clock.now()) == []


async def test_rsa_keys_when_configured(
    server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock
) -> None:
    manager = SyncManager(server, cache, fake_clock, key_type=KeyType.RSA_2048)
    server.add(entry("web"))
    await manager.sync_now()
    svid = _identity_svid(cache, "web")
    key = serialization.load_der_private_key(svid.private_key or b"", None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


async def test_unavailable_keeps_cache_and_raises(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    snapshot = cache.snapshot()
    assert snapshot.server_away is False
    server.unavailable = True
    with pytest.raises(UnavailableError):
        await manager.sync_now()
    assert cache.snapshot().identities == snapshot.identities
    assert cache.snapshot().server_away is True
    assert manager.consecutive_failures == 1


async def test_retry_delay_doubles_from_one_second_up_to_the_interval_with_jitter(
    server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock
) -> None:
    manager = SyncManager(server, cache, fake_clock, interval=5, rng=random.Random(7))
    server.add(entry("web"))
    await manager.sync_now()
    server.unavailable = True
    attempts = server.calls["fetch_authorized_entries"]

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(manager.run())
        try:
            # The first attempt happens at once and fails.
            await eventually(lambda: server.calls["fetch_authorized_entries"] == attempts + 1)
            await eventually(lambda: fake_clock.sleepers == 1)
            delays = []
            for _ in range(8):
                delay = manager.next_delay
                delays.append(delay)
                made = server.calls["fetch_authorized_entries"]
                await fake_clock.advance(delay * 0.99)
                assert server.calls["fetch_authorized_entries"] == made
                await fake_clock.advance(delay * 0.01)
                await eventually(partial(_called_more, server, made))
                await eventually(lambda: fake_clock.sleepers == 1)
            # 1 s, 2 s, 4 s, then the 5 s interval, each shortened by up to 20%.
            for delay, nominal in zip(delays, [1, 2, 4, 5, 5, 5, 5, 5], strict=True):
                assert nominal * 0.8 <= delay <= nominal
            assert len(set(delays[3:])) > 1, "jitter varies the delays"
            assert snapshot_ids(cache) == ["web"]

            server.unavailable = False
            await fake_clock.advance(manager.next_delay)
            await eventually(lambda: manager.consecutive_failures == 0)
            assert 5 * (1 - INTERVAL_JITTER) <= manager.next_delay <= 5
            assert cache.snapshot().server_away is False
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    failures = [log for log in logs if log["event"].startswith("sync with the server failed;")]
    restored = [log for log in logs if log["event"] == "sync with the server restored"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "warning"
    assert len(restored) == 1
    assert restored[0]["failed_attempts"] == 9
    assert fake_clock.sleepers == 0


async def test_resync_within_an_interval_of_the_server_return_after_a_long_outage(
    server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock
) -> None:
    manager = SyncManager(server, cache, fake_clock, interval=5)
    server.add(entry("web"))
    await manager.sync_now()
    server.unavailable = True
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: manager.consecutive_failures == 1)
        # Ten minutes away: at most one attempt per interval (plus the short first retries).
        for _ in range(600):
            await fake_clock.advance(1)
        assert server.calls["fetch_authorized_entries"] <= 1 + 600 / 4 + 4
        server.unavailable = False
        back = fake_clock.now()
        await eventually(lambda: fake_clock.sleepers == 1)
        while manager.consecutive_failures:
            await fake_clock.advance(0.5)
            await asyncio.sleep(0.001)
        assert (fake_clock.now() - back).total_seconds() <= 5
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _called_more(server: FakeServerApi, made: int) -> bool:
    return server.calls["fetch_authorized_entries"] > made


def snapshot_ids(cache: WorkloadCache) -> list[str]:
    return [identity.entry.id for identity in cache.snapshot().identities]


async def test_permission_denied_clears_identities_and_stops(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    bundle = cache.snapshot().bundle
    await cache.fetch_jwt_svid(server.entries["web"], ["aud"])
    assert len(cache.jwt_svids) == 1

    server.denied = "agent is banned"
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(manager.run())
        await fake_clock.advance(0)
        with pytest.raises(PermissionDeniedError, match="agent is banned"):
            await asyncio.wait_for(task, 5)

    snapshot = cache.snapshot()
    assert snapshot.identities == ()
    assert snapshot.bundle == bundle
    assert cache.entries() == ()
    assert len(cache.jwt_svids) == 0
    assert manager.denied is not None
    assert [log["log_level"] for log in logs if "refused the agent" in log["event"]] == ["error"]

    # Stopped: no further calls reach the server.
    server.denied = None
    calls = sum(server.calls.values())
    with pytest.raises(PermissionDeniedError):
        await manager.sync_now()
    assert sum(server.calls.values()) == calls


async def test_run_syncs_every_interval(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: server.calls["fetch_authorized_entries"] == 1)
        await eventually(lambda: fake_clock.sleepers == 1)
        server.add(entry("web"))
        await fake_clock.advance(4)
        assert server.calls["fetch_authorized_entries"] == 1
        await fake_clock.advance(1)
        await eventually(lambda: snapshot_ids(cache) == ["web"])
        assert server.calls["fetch_authorized_entries"] == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fake_clock.sleepers == 0


async def test_each_interval_is_shortened_at_random_so_agents_drift_out_of_step(
    server: FakeServerApi, cache: WorkloadCache
) -> None:
    clock = FakeClock()
    waits = []
    for seed in range(2):
        manager = SyncManager(server, cache, clock, interval=5, rng=random.Random(seed))
        for _ in range(3):
            await manager.sync_now()
            waits.append(manager.next_delay)
    assert all(5 * (1 - INTERVAL_JITTER) <= wait <= 5 for wait in waits)
    assert len(set(waits)) == len(waits), "a new draw after every sync, and per agent"


async def test_demand_wakes_the_loop(server: FakeServerApi, fake_clock: FakeClock) -> None:
    from pyspire_sdk.selector import Selector

    cache = WorkloadCache(server, fake_clock, x509_svid_cache_max_size=1)
    manager = SyncManager(server, cache, fake_clock, interval=5)
    server.add(
        entry("a", created=1, selectors=["unix:uid:1"]),
        entry("b", created=2, selectors=["unix:uid:2"]),
    )
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: snapshot_ids(cache) == ["a"])
        await eventually(lambda: fake_clock.sleepers == 1)
        # b is beyond the bound; a workload wanting it wakes the loop without waiting 5 s,
        # and only the missing SVID is minted: the entries are not fetched again.
        assert cache.touch(frozenset({Selector.parse("unix:uid:2")})) is False
        await eventually(lambda: "b" in snapshot_ids(cache))
        assert server.calls["fetch_authorized_entries"] == 1
        assert server.batches[-1] == ["b"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await cache.close()


def test_invalid_settings_are_refused(
    server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock
) -> None:
    with pytest.raises(InvalidArgumentError, match="interval must be positive"):
        SyncManager(server, cache, fake_clock, interval=0)
    with pytest.raises(InvalidArgumentError, match="csr_batch must be at least 1"):
        SyncManager(server, cache, fake_clock, csr_batch=0)


def test_issued_svid_inspection_rejects_wrong_identity(server: FakeServerApi) -> None:
    from pyspire.agent.sync import _make_requests

    web = entry("web")
    key = _make_requests(KeyType.EC_P256, [web])[0].private_key
    with pytest.raises(InvalidArgumentError, match="cert_chain is empty"):
        IssuedSvid.inspect(web, X509Svid(web.spiffe_id, (), server.clock.now(), key))


async def test_demand_does_not_cut_the_backoff_short(
    server: FakeServerApi, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.unavailable = True
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: server.calls["fetch_authorized_entries"] == 1)
        await eventually(lambda: fake_clock.sleepers == 1)
        manager.request_sync()
        for _ in range(10):
            await asyncio.sleep(0)
        assert server.calls["fetch_authorized_entries"] == 1
        await fake_clock.advance(manager.next_delay)
        await eventually(lambda: server.calls["fetch_authorized_entries"] == 2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
