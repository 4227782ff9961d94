"""Several servers of one trust domain on one datastore, each with its own keys and CA.

Two CA managers share one store (the datastore's CA journal and bundle) but not their key
managers, as two server processes on one PostgreSQL do. Through several staggered rotations on
a fake clock, the shared bundle must always hold every live authority of both servers: a
server's rotation publishes its own keys and drops only expired ones, never the other's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from cryptography import x509

from pyspire.ca.manager import JOURNAL_NAME, CaManager, CaSettings, journal_name
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import MemoryCaStore

TD = TrustDomain("example.org")
SETTINGS = CaSettings(trust_domain=TD, ca_ttl=timedelta(hours=24))


@pytest.fixture
async def other_keys(host_services: HostServices) -> AsyncIterator[InProcessKeyManager]:
    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    yield manager
    await manager.close()


def server(
    name: str, keys: InProcessKeyManager, store: MemoryCaStore, clock: FakeClock
) -> CaManager:
    return CaManager(
        SETTINGS, key_manager=keys, store=store, clock=clock, journal=journal_name(name)
    )


def assert_bundle_trusts_every_live_authority(
    store: MemoryCaStore, clock: FakeClock, *managers: CaManager
) -> None:
    bundle = store.bundles[TD]
    now = clock.now()
    x509_published = {a.der for a in bundle.x509_authorities}
    jwt_published = {a.key_id for a in bundle.jwt_authorities}
    for manager in managers:
        assert manager.x509_ca.der in x509_published
        assert manager.jwt_key.kid in jwt_published
        for slot in manager.x509_slots.values():
            if slot.ca.not_after > now:
                assert slot.ca.der in x509_published, slot
        for jwt_slot in manager.jwt_slots.values():
            if jwt_slot.key.not_after > now:
                assert jwt_slot.key.kid in jwt_published, jwt_slot
    for authority in bundle.x509_authorities:
        assert x509.load_der_x509_certificate(authority.der).not_valid_after_utc >= now


async def test_each_server_keeps_its_own_journal_and_both_cas_are_trusted(
    key_manager: InProcessKeyManager,
    other_keys: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
) -> None:
    first = server("a", key_manager, ca_store, fake_clock)
    await first.start()
    second = server("b", other_keys, ca_store, fake_clock)
    await second.start()
    assert first.x509_ca.der != second.x509_ca.der
    assert set(ca_store.journals) == {journal_name("a"), journal_name("b")}
    assert_bundle_trusts_every_live_authority(ca_store, fake_clock, first, second)

    # Each restarts into its own CA and keys: neither journal was overwritten by the other.
    restarted_first = server("a", key_manager, ca_store, fake_clock)
    await restarted_first.start()
    restarted_second = server("b", other_keys, ca_store, fake_clock)
    await restarted_second.start()
    assert restarted_first.x509_ca.der == first.x509_ca.der
    assert restarted_first.jwt_key.kid == first.jwt_key.kid
    assert restarted_second.x509_ca.der == second.x509_ca.der
    assert len(ca_store.bundles[TD].x509_authorities) == 2
    assert len(ca_store.bundles[TD].jwt_authorities) == 2


async def test_staggered_rotations_never_drop_a_key_the_other_server_signs_with(
    key_manager: InProcessKeyManager,
    other_keys: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
) -> None:
    first = server("a", key_manager, ca_store, fake_clock)
    await first.start()
    await fake_clock.advance(timedelta(hours=5))  # the second server joins later
    second = server("b", other_keys, ca_store, fake_clock)
    await second.start()
    authorities = {first.x509_ca.der, second.x509_ca.der}
    for _ in range(4 * 24):  # four CA lifetimes, an hour at a time, rotations interleaved
        await fake_clock.advance(timedelta(hours=1))
        await first.rotate()
        assert_bundle_trusts_every_live_authority(ca_store, fake_clock, first, second)
        await second.rotate()
        assert_bundle_trusts_every_live_authority(ca_store, fake_clock, first, second)
        authorities |= {first.x509_ca.der, second.x509_ca.der}
    assert len(authorities) >= 8  # both servers went through several generations


async def test_a_journal_from_before_server_ids_is_adopted_by_the_server_holding_its_keys(
    key_manager: InProcessKeyManager,
    other_keys: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
) -> None:
    old = CaManager(SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock)
    await old.start()
    assert set(ca_store.journals) == {JOURNAL_NAME}

    upgraded = server("a", key_manager, ca_store, fake_clock)
    await upgraded.start()
    joining = server("b", other_keys, ca_store, fake_clock)
    await joining.start()

    assert upgraded.x509_ca.der == old.x509_ca.der  # its own keys: resumed
    assert joining.x509_ca.der != old.x509_ca.der  # not its keys: a CA of its own
    assert journal_name("a") in ca_store.journals
    assert_bundle_trusts_every_live_authority(ca_store, fake_clock, upgraded, joining)
