"""CA rotation through several generations on a fake clock, with a restart in the middle.

At every checkpoint the bundle must hold exactly the authorities that are prepared, active or
old and not yet expired: a new key is published before it signs anything, and an expired one is
gone.
"""

from __future__ import annotations

import json
from datetime import timedelta

from cryptography import x509

from pyspire.ca.manager import JOURNAL_NAME, CaManager, CaSettings
from pyspire.ca.rotation import SlotStatus, activate_at, prepare_at
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import MemoryCaStore

TD = TrustDomain("example.org")
SETTINGS = CaSettings(trust_domain=TD, ca_ttl=timedelta(hours=24))


def new_manager(
    key_manager: InProcessKeyManager, store: MemoryCaStore, clock: FakeClock
) -> CaManager:
    return CaManager(SETTINGS, key_manager=key_manager, store=store, clock=clock)


def assert_bundle_matches_live_slots(
    manager: CaManager, store: MemoryCaStore, clock: FakeClock
) -> None:
    bundle = store.bundles[TD]
    now = clock.now()
    live_x509 = {s.ca.der for s in manager.x509_slots.values() if s.ca.not_after >= now}
    live_jwt = {s.key.kid for s in manager.jwt_slots.values() if s.key.not_after >= now}
    assert {a.der for a in bundle.x509_authorities} == live_x509
    assert {a.key_id for a in bundle.jwt_authorities} == live_jwt
    for authority in bundle.x509_authorities:
        assert x509.load_der_x509_certificate(authority.der).not_valid_after_utc >= now


def statuses(manager: CaManager) -> dict[str, SlotStatus]:
    return {slot_id: slot.status for slot_id, slot in manager.x509_slots.items()}


async def test_three_generations_with_a_restart(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    manager = new_manager(key_manager, ca_store, fake_clock)
    await manager.start()
    assert statuses(manager) == {"A": SlotStatus.ACTIVE}
    assert_bundle_matches_live_slots(manager, ca_store, fake_clock)
    first = manager.x509_ca
    seen_authorities = [first.authority_id]
    seen_kids = [manager.jwt_key.kid]
    sequence = ca_store.bundles[TD].sequence_number

    for generation in range(3):
        active = manager.x509_ca
        active_slot = next(s for s, v in manager.x509_slots.items() if v.ca == active)
        # Just before preparation: nothing new.
        await fake_clock.set(prepare_at(active.not_before, active.not_after) - timedelta(seconds=1))
        await manager.rotate()
        assert manager.x509_ca == active
        assert len(ca_store.bundles[TD].x509_authorities) == 1
        # Preparation: published, not yet used.
        await fake_clock.set(
            prepare_at(active.not_before, active.not_after) + timedelta(seconds=15)
        )
        await manager.rotate()
        assert manager.x509_ca == active
        prepared = [s for s in manager.x509_slots.values() if s.status is SlotStatus.PREPARED]
        assert len(prepared) == 1
        assert prepared[0].slot_id != active_slot
        assert len(ca_store.bundles[TD].x509_authorities) == 2
        assert len(ca_store.bundles[TD].jwt_authorities) == 2
        assert ca_store.bundles[TD].sequence_number > sequence
        sequence = ca_store.bundles[TD].sequence_number
        assert_bundle_matches_live_slots(manager, ca_store, fake_clock)

        if generation == 1:
            # Restart between prepare and activate: the same slots come back, no new keys.
            manager = new_manager(key_manager, ca_store, fake_clock)
            await manager.start()
            assert manager.x509_ca.authority_id == active.authority_id
            assert {s.status for s in manager.x509_slots.values()} == {
                SlotStatus.ACTIVE,
                SlotStatus.PREPARED,
            }
            assert ca_store.bundles[TD].sequence_number == sequence

        # Activation: the prepared CA signs, the previous one is old but still trusted.
        await fake_clock.set(
            activate_at(active.not_before, active.not_after) + timedelta(seconds=15)
        )
        await manager.rotate()
        assert manager.x509_ca.authority_id == prepared[0].ca.authority_id
        assert manager.x509_slots[active_slot].status is SlotStatus.OLD
        assert_bundle_matches_live_slots(manager, ca_store, fake_clock)
        seen_authorities.append(manager.x509_ca.authority_id)
        seen_kids.append(manager.jwt_key.kid)

        # Expiry of the old CA: pruned from the bundle.
        await fake_clock.set(active.not_after + timedelta(seconds=1))
        await manager.rotate()
        assert active.der not in {a.der for a in ca_store.bundles[TD].x509_authorities}
        assert active_slot not in manager.x509_slots or (
            manager.x509_slots[active_slot].status is SlotStatus.PREPARED
        )
        assert_bundle_matches_live_slots(manager, ca_store, fake_clock)

    assert len(set(seen_authorities)) == 4
    assert len(set(seen_kids)) == 4
    assert all(len(kid) == 32 and kid.isalnum() for kid in seen_kids)


async def test_restart_resumes_with_the_same_credentials(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    manager = new_manager(key_manager, ca_store, fake_clock)
    await manager.start()
    bundle = ca_store.bundles[TD]
    restarted = new_manager(key_manager, ca_store, fake_clock)
    await restarted.start()
    assert restarted.x509_ca.der == manager.x509_ca.der
    assert restarted.jwt_key.kid == manager.jwt_key.kid
    assert ca_store.bundles[TD] == bundle


async def test_lost_keys_mean_a_fresh_ca(
    host_services: object, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    """A key manager that forgot its keys (memory, after a restart) cannot reuse the journal."""
    from pyspire_sdk.plugin import HostServices, NoConfig

    assert isinstance(host_services, HostServices)
    first_keys = InProcessKeyManager()
    await first_keys.configure(NoConfig(), host_services)
    manager = new_manager(first_keys, ca_store, fake_clock)
    await manager.start()
    fresh_keys = InProcessKeyManager()
    await fresh_keys.configure(NoConfig(), host_services)
    restarted = new_manager(fresh_keys, ca_store, fake_clock)
    await restarted.start()
    assert restarted.x509_ca.der != manager.x509_ca.der
    # The old CA stays trusted until it expires: SVIDs it signed are still out there.
    assert len(ca_store.bundles[TD].x509_authorities) == 2


async def test_expired_ca_after_long_downtime_is_replaced_at_once(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    manager = new_manager(key_manager, ca_store, fake_clock)
    await manager.start()
    old = manager.x509_ca
    await fake_clock.advance(timedelta(days=3))
    restarted = new_manager(key_manager, ca_store, fake_clock)
    await restarted.start()
    assert restarted.x509_ca.not_after > fake_clock.now()
    assert old.der not in {a.der for a in ca_store.bundles[TD].x509_authorities}


async def test_garbage_journal_is_survived(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    ca_store.journals[JOURNAL_NAME] = b"{not json"
    manager = new_manager(key_manager, ca_store, fake_clock)
    await manager.start()
    assert json.loads(ca_store.journals[JOURNAL_NAME])["version"] == 1


async def test_listeners_hear_of_activations(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    manager = new_manager(key_manager, ca_store, fake_clock)
    heard: list[str] = []

    async def listener() -> None:
        heard.append(manager.x509_ca.authority_id)

    manager.add_listener(listener)
    await manager.start()
    assert len(heard) == 1  # once both the X.509 CA and the JWT key are active
    active = manager.x509_ca
    await fake_clock.set(prepare_at(active.not_before, active.not_after) + timedelta(seconds=15))
    await manager.rotate()
    assert len(heard) == 3  # the next X.509 CA and JWT key were prepared


class RootUpstream:
    """An upstream authority in memory: a root CA that signs our CA's CSR."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "upstream root")])
        self.root = self._sign(
            x509.CertificateBuilder().subject_name(self.name).public_key(self.key.public_key()),
            ca=True,
            ttl=timedelta(days=365),
        )
        self.published: list[object] = []
        self.requests: list[tuple[x509.CertificateSigningRequest, timedelta]] = []

    def _sign(
        self, builder: x509.CertificateBuilder, *, ca: bool, ttl: timedelta
    ) -> x509.Certificate:
        from datetime import UTC, datetime

        from cryptography.hazmat.primitives import hashes

        now = datetime(2029, 12, 1, tzinfo=UTC)
        usage = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )
        return (
            builder.issuer_name(self.name)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + ttl)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(self.key, hashes.SHA256())
        )

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta):  # type: ignore[no-untyped-def]
        from cryptography.hazmat.primitives import serialization

        from pyspire_sdk.plugins.upstream_authority import UpstreamX509CA

        csr = x509.load_der_x509_csr(csr_der)
        assert csr.is_signature_valid
        self.requests.append((csr, preferred_ttl))
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        certificate = self._sign(
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .public_key(csr.public_key())
            .add_extension(san.value, critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False
            ),
            ca=True,
            ttl=timedelta(days=60),  # valid at the fake clock (2030-01-01)
        )
        der = serialization.Encoding.DER
        return UpstreamX509CA(
            ca_chain=(certificate.public_bytes(der),), upstream_roots=(self.root.public_bytes(der),)
        )

    async def publish_jwt_key(self, key):  # type: ignore[no-untyped-def]
        self.published.append(key)
        return []


async def test_upstream_authority_signs_the_ca_and_its_root_goes_in_the_bundle(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from pyspire.ca.x509svid import mint_x509_svid
    from pyspire_sdk.spiffeid import SpiffeId

    upstream = RootUpstream()
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=upstream
    )
    await manager.start()
    ca = manager.x509_ca
    ca.certificate.verify_directly_issued_by(upstream.root)
    root_der = upstream.root.public_bytes(serialization.Encoding.DER)
    assert [a.der for a in ca_store.bundles[TD].x509_authorities] == [root_der]
    assert len(upstream.published) == 1  # the JWT key was offered upstream
    minted = await mint_x509_svid(
        ca,
        spiffe_id=SpiffeId.parse("spiffe://example.org/w"),
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        ttl=timedelta(minutes=5),
        now=fake_clock.now(),
    )
    leaf, intermediate = (x509.load_der_x509_certificate(der) for der in minted.chain)
    assert intermediate == ca.certificate  # the chain carries our CA up to the upstream root
    leaf.verify_directly_issued_by(ca.certificate)


class SlowUpstream(RootUpstream):
    """An upstream that takes a while and, like AWS Private CA, starts the CA's validity at
    the moment it issues it (no backdating)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        super().__init__()

    def _sign(
        self, builder: x509.CertificateBuilder, *, ca: bool, ttl: timedelta
    ) -> x509.Certificate:
        signed = super()._sign(builder, ca=ca, ttl=ttl)
        if signed.subject == self.name:
            return signed  # the root, made before the clock moves
        from cryptography.hazmat.primitives import hashes

        issued = self.clock.now()
        return (
            x509.CertificateBuilder()
            .subject_name(signed.subject)
            .issuer_name(self.name)
            .public_key(signed.public_key())  # type: ignore[arg-type]
            .serial_number(signed.serial_number)
            .not_valid_before(issued)
            .not_valid_after(issued + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(signed.extensions.get_extension_for_class(x509.KeyUsage).value, True)
            .add_extension(
                signed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
                critical=False,
            )
            .add_extension(
                signed.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value,
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta):  # type: ignore[no-untyped-def]
        await self.clock.advance(timedelta(seconds=3))
        return await super().mint_x509_ca(csr_der, preferred_ttl)


async def test_a_ca_the_upstream_issued_after_the_request_began_is_accepted(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    upstream = SlowUpstream(fake_clock)
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=upstream
    )
    await manager.start()
    manager.x509_ca.certificate.verify_directly_issued_by(upstream.root)
