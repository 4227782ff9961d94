"""Re-minting after a taint: every SVID of a tainted authority replaced, spread over time, and
JWT-SVIDs of a tainted JWT key dropped."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography import x509

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.sync import SyncManager
from pyspire.agent.tainted import TAINT_SPREAD, TaintSchedule, jwt_key_id, signed_by_tainted
from pyspire_sdk.bundle import JwtAuthority
from pyspire_sdk.model import JwtSvid
from pyspire_sdk.testing import FakeClock

from .fakes import FakeServerApi, entry, leaf

SYNC_INTERVAL = 5


def _issuers(cache: WorkloadCache) -> dict[str, bytes]:
    return {
        identity.entry.id: leaf(identity.svid)
        .extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        .value.key_identifier
        or b""
        for identity in cache.snapshot().identities
    }


async def test_a_thousand_svids_are_reissued_within_30s_of_a_taint_spread_over_syncs(
    server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock
) -> None:
    manager = SyncManager(server, cache, fake_clock, interval=SYNC_INTERVAL)
    server.add(*(entry(f"e{index:04}") for index in range(1000)))
    await manager.sync_now()
    old_issuer = server.ca.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value.digest
    assert set(_issuers(cache).values()) == {old_issuer}

    await fake_clock.advance(SYNC_INTERVAL - 0.1)  # the taint lands just after a sync
    server.rotate_ca(keep_old=True, taint_old=True)
    tainted_at = fake_clock.now()
    per_sync: list[int] = []
    while any(issuer == old_issuer for issuer in _issuers(cache).values()):
        await fake_clock.advance(0.1 if not per_sync else SYNC_INTERVAL)
        per_sync.append((await manager.sync_now()).issued)
        assert fake_clock.now() - tainted_at <= timedelta(seconds=30), per_sync

    assert sum(per_sync) == 1000
    assert max(per_sync) <= 600, per_sync  # spread: no sync takes them all at once
    assert len(_issuers(cache)) == 1000
    assert fake_clock.now() - tainted_at <= TAINT_SPREAD + timedelta(seconds=SYNC_INTERVAL)


async def test_svids_of_an_untainted_authority_are_left_alone(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager, fake_clock: FakeClock
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    server.rotate_ca(keep_old=True, taint_old=False)
    await fake_clock.advance(TAINT_SPREAD)
    assert (await manager.sync_now()).issued == 0


def test_schedule_keeps_the_moment_a_taint_was_first_seen(fake_clock: FakeClock) -> None:
    schedule = TaintSchedule(timedelta(seconds=10))
    start = fake_clock.now()
    schedule.observe({b"a": True, b"b": False}, start)
    schedule.observe({b"a": True}, start + timedelta(seconds=9))
    assert schedule.due("any", {b"a"}, start + timedelta(seconds=10))
    due = [schedule.due(f"e{i}", {b"a"}, start + timedelta(seconds=5)) for i in range(200)]
    assert 50 < sum(due) < 150  # about half of them come due in the first half of the window
    assert schedule.due("any", {b"unknown"}, start)


def _token(kid: str | None) -> str:
    def segment(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header = {"alg": "ES256", "typ": "JWT"} | ({"kid": kid} if kid else {})
    return f"{segment(header)}.{segment({'sub': 'spiffe://example.org/w'})}.c2ln"


async def test_jwt_svids_of_a_tainted_key_are_dropped(
    server: FakeServerApi,
    cache: WorkloadCache,
    manager: SyncManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert jwt_key_id(_token("k1")) == "k1"
    assert jwt_key_id("not a token") is None
    mint = server.new_jwt_svid

    async def signed_by_old_key(entry_id: str, audience: Sequence[str]) -> JwtSvid:
        return replace(await mint(entry_id, audience), token=_token("old-key"))

    monkeypatch.setattr(server, "new_jwt_svid", signed_by_old_key)
    web = entry("web")
    server.add(web)
    await manager.sync_now()
    await cache.fetch_jwt_svid(web, ["aud"])
    assert cache.jwt_svids.drop_signed_by({"other"}) == 0
    assert len(cache.jwt_svids) == 1

    server.bundle = server.bundle.with_changes(
        jwt_authorities=(JwtAuthority(key_id="old-key", public_key=b"k", tainted=True),)
    )
    await manager.sync_now()
    assert len(cache.jwt_svids) == 0


async def test_a_chain_is_recognised_as_signed_by_a_tainted_authority(
    server: FakeServerApi, cache: WorkloadCache, manager: SyncManager
) -> None:
    server.add(entry("web"))
    await manager.sync_now()
    (identity,) = cache.snapshot().identities
    chain = identity.svid.cert_chain
    first = server.ca.authority
    assert not signed_by_tainted(chain, server.bundle)
    server.rotate_ca(keep_old=True, taint_old=False)
    second = server.ca.authority
    only_second_tainted = server.bundle.with_changes(
        x509_authorities=(first, replace(second, tainted=True))
    )
    assert not signed_by_tainted(chain, only_second_tainted)
    first_tainted = server.bundle.with_changes(
        x509_authorities=(replace(first, tainted=True), second)
    )
    assert signed_by_tainted(chain, first_tainted)
