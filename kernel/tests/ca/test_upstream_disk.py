"""The CA manager with the ``disk`` upstream authority, on the fake clock.

The server's CA is an intermediate under an upstream PKI kept in files (root → upstream
intermediate → signing CA): the bundle holds the upstream roots and never the server's CA,
SVIDs carry the server CA and the upstream certificates up to the root, and each rotation asks
the upstream for the next CA well before the current one ends. When the operator replaces the
upstream files, the next CA comes from the new upstream and its roots join the bundle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from pyspire_upstreamauthority_disk import DiskUpstreamAuthority, DiskUpstreamConfig

from pyspire.ca.manager import CaManager, CaSettings
from pyspire.ca.rotation import SlotStatus, activate_at, prepare_at
from pyspire.ca.x509svid import mint_x509_svid
from pyspire_sdk.errors import FailedPreconditionError, PyspireError
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.upstream_authority import UpstreamX509CA
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.upstream_ca import CA_POLICY, EE_POLICY

from .conftest import MemoryCaStore

TD = TrustDomain("example.org")
SETTINGS = CaSettings(trust_domain=TD, ca_ttl=timedelta(hours=24))
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM

Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _ca(name: str, issuer: Issuer | None, now: datetime, ttl: timedelta) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer[1] if issuer else key, hashes.SHA256())
    )
    return certificate, key


class UpstreamPki:
    """root → intermediate → signer, written as the disk plugin's three files."""

    def __init__(self, name: str, now: datetime) -> None:
        self.root = _ca(f"{name} root", None, now, timedelta(days=3650))
        self.intermediate = _ca(f"{name} intermediate", self.root, now, timedelta(days=365))
        self.signer = _ca(f"{name} signer", self.intermediate, now, timedelta(days=90))

    def write(self, directory: Path) -> None:
        (directory / "cert.pem").write_bytes(
            self.signer[0].public_bytes(PEM) + self.intermediate[0].public_bytes(PEM)
        )
        key = directory / "key.pem"
        key.touch(mode=0o600)
        key.chmod(0o600)
        key.write_bytes(
            self.signer[1].private_bytes(
                PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (directory / "bundle.pem").write_bytes(self.root[0].public_bytes(PEM))


class CountingDisk(DiskUpstreamAuthority):
    """The disk plugin, remembering when the CA manager asked it for a CA."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.asked_at: list[datetime] = []
        self._clock = clock

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        self.asked_at.append(self._clock.now())
        return await super().mint_x509_ca(csr_der, preferred_ttl)


@pytest.fixture
async def upstream(
    tmp_path: Path, fake_clock: FakeClock, host_services: HostServices
) -> AsyncIterator[tuple[CountingDisk, UpstreamPki, Path]]:
    pki = UpstreamPki("first", fake_clock.now())
    pki.write(tmp_path)
    disk = CountingDisk(fake_clock)
    await disk.configure(
        DiskUpstreamConfig(
            cert_file_path=tmp_path / "cert.pem",
            key_file_path=tmp_path / "key.pem",
            bundle_file_path=tmp_path / "bundle.pem",
        ),
        host_services,
    )
    yield disk, pki, tmp_path
    await disk.close()


def verify_svid(
    chain: tuple[bytes, ...], roots: list[bytes], at: datetime
) -> list[x509.Certificate]:
    """Path validation of an X509-SVID chain against the bundle's roots at ``at``."""
    certificates = [x509.load_der_x509_certificate(der) for der in chain]
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([x509.load_der_x509_certificate(der) for der in roots]))
        .time(at)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )
    return list(verifier.verify(certificates[0], certificates[1:]).chain)


async def svid_chain(manager: CaManager, clock: FakeClock) -> tuple[bytes, ...]:
    minted = await mint_x509_svid(
        manager.x509_ca,
        spiffe_id=SpiffeId.parse("spiffe://example.org/workload"),
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        ttl=timedelta(hours=1),
        now=clock.now(),
    )
    return tuple(minted.chain)


def bundle_roots(store: MemoryCaStore) -> list[bytes]:
    return [authority.der for authority in store.bundles[TD].x509_authorities]


async def test_the_bundle_holds_the_upstream_root_and_svids_chain_to_it(
    key_manager: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
    upstream: tuple[CountingDisk, UpstreamPki, Path],
) -> None:
    disk, pki, _ = upstream
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=disk
    )
    await manager.start()

    assert bundle_roots(ca_store) == [pki.root[0].public_bytes(DER)]
    chain = await svid_chain(manager, fake_clock)
    assert chain[1:] == (
        manager.x509_ca.der,
        pki.signer[0].public_bytes(DER),
        pki.intermediate[0].public_bytes(DER),
    )
    path = verify_svid(chain, bundle_roots(ca_store), fake_clock.now())
    assert path[-1] == pki.root[0]
    assert manager.x509_ca.certificate.issuer == pki.signer[0].subject


async def test_rotation_asks_the_upstream_before_the_current_ca_ends(
    key_manager: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
    upstream: tuple[CountingDisk, UpstreamPki, Path],
) -> None:
    disk, pki, _ = upstream
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=disk
    )
    await manager.start()
    assert len(disk.asked_at) == 1

    for _ in range(3):
        active = manager.x509_ca
        prepare = prepare_at(active.not_before, active.not_after)
        await fake_clock.set(prepare - timedelta(seconds=1))
        await manager.rotate()
        asked = len(disk.asked_at)
        await fake_clock.set(prepare + timedelta(seconds=10))
        await manager.rotate()
        assert len(disk.asked_at) == asked + 1
        assert disk.asked_at[-1] < active.not_after
        [prepared] = [s for s in manager.x509_slots.values() if s.status is SlotStatus.PREPARED]
        assert prepared.ca.certificate.issuer == pki.signer[0].subject

        await fake_clock.set(
            activate_at(active.not_before, active.not_after) + timedelta(seconds=10)
        )
        await manager.rotate()
        assert manager.x509_ca == prepared.ca
        assert fake_clock.now() < active.not_after
        # The bundle never carries the server's CAs: only the upstream root.
        assert bundle_roots(ca_store) == [pki.root[0].public_bytes(DER)]
        chain = await svid_chain(manager, fake_clock)
        assert verify_svid(chain, bundle_roots(ca_store), fake_clock.now())[-1] == pki.root[0]


async def test_replaced_upstream_files_sign_the_next_ca_and_add_their_root(
    key_manager: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
    upstream: tuple[CountingDisk, UpstreamPki, Path],
) -> None:
    disk, first, directory = upstream
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=disk
    )
    await manager.start()
    old = manager.x509_ca
    second = UpstreamPki("second", fake_clock.now())
    second.write(directory)

    await fake_clock.set(prepare_at(old.not_before, old.not_after) + timedelta(seconds=10))
    await manager.rotate()
    await fake_clock.set(activate_at(old.not_before, old.not_after) + timedelta(seconds=10))
    await manager.rotate()

    roots = bundle_roots(ca_store)
    assert roots == [first.root[0].public_bytes(DER), second.root[0].public_bytes(DER)]
    chain = await svid_chain(manager, fake_clock)
    assert verify_svid(chain, [second.root[0].public_bytes(DER)], fake_clock.now())
    # SVIDs of the old CA still verify until it ends: its root stays in the bundle.
    await fake_clock.set(old.not_after + timedelta(seconds=1))
    await manager.rotate()
    assert bundle_roots(ca_store) == roots


class WrongKeyUpstream(CountingDisk):
    """Signs a CA for a key that is not the CSR's."""

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        other = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier("spiffe://example.org")]
                ),
                critical=False,
            )
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        )
        return await super().mint_x509_ca(other.public_bytes(DER), preferred_ttl)


class StrangeRootsUpstream(CountingDisk):
    """Answers with roots the CA does not chain to."""

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        minted = await super().mint_x509_ca(csr_der, preferred_ttl)
        stranger = _ca("stranger", None, self._clock.now(), timedelta(days=1))[0]
        return UpstreamX509CA(
            ca_chain=minted.ca_chain, upstream_roots=(stranger.public_bytes(DER),)
        )


@pytest.mark.parametrize(
    ("broken", "reason"),
    [(WrongKeyUpstream, "another key"), (StrangeRootsUpstream, "does not chain")],
)
async def test_an_upstream_ca_that_cannot_work_is_refused_before_use(
    key_manager: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
    upstream: tuple[CountingDisk, UpstreamPki, Path],
    host_services: HostServices,
    broken: type[CountingDisk],
    reason: str,
) -> None:
    _, _, directory = upstream
    disk = broken(fake_clock)
    await disk.configure(
        DiskUpstreamConfig(
            cert_file_path=directory / "cert.pem",
            key_file_path=directory / "key.pem",
            bundle_file_path=directory / "bundle.pem",
        ),
        host_services,
    )
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=disk
    )
    with pytest.raises(PyspireError, match=reason):
        await manager.start()
    assert TD not in ca_store.bundles


def test_an_answer_that_is_no_ca_of_the_trust_domain_is_refused(fake_clock: FakeClock) -> None:
    from pyspire.ca.upstream import accept_upstream_ca
    from pyspire_sdk.errors import PluginError

    root = _ca("root", None, fake_clock.now(), timedelta(days=1))
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def answer(uri: str, *, key_usage: bool = True, ttl: timedelta = timedelta(hours=1)) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]))
            .issuer_name(root[0].subject)
            .public_key(key.public_key())
            .serial_number(7)
            .not_valid_before(fake_clock.now() - timedelta(minutes=1))
            .not_valid_after(fake_clock.now() + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False
            )
        )
        if key_usage:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
        return builder.sign(root[1], hashes.SHA256()).public_bytes(DER)

    def check(ca_der: bytes) -> None:
        accept_upstream_ca(
            UpstreamX509CA(ca_chain=(ca_der,), upstream_roots=(root[0].public_bytes(DER),)),
            public_key_der=spki,
            trust_domain=TD,
            now=fake_clock.now(),
        )

    check(answer("spiffe://example.org"))
    with pytest.raises(PluginError, match="lacks the keyUsage extension"):
        check(answer("spiffe://example.org", key_usage=False))
    with pytest.raises(PluginError, match="not the trust domain's ID"):
        check(answer("spiffe://example.org/workload"))
    with pytest.raises(PluginError, match="not valid at validation time"):
        check(answer("spiffe://example.org", ttl=-timedelta(seconds=1)))


def tainted_roots(store: MemoryCaStore) -> list[bytes]:
    return [a.der for a in store.bundles[TD].x509_authorities if a.tainted]


async def test_a_tainted_upstream_root_has_the_ca_replaced_at_once(
    key_manager: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
    upstream: tuple[CountingDisk, UpstreamPki, Path],
) -> None:
    """SPIRE's tainted upstream authorities: the active CA chains to the tainted root, so a new
    CA is prepared from the upstream (now signing under another root) and activated without
    waiting for the schedule, and only then is the root marked tainted in our bundle."""
    disk, first, directory = upstream
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=disk
    )
    await manager.start()
    old = manager.current_x509()
    assert old is not None
    second = UpstreamPki("second", fake_clock.now())
    second.write(directory)
    first_root = first.root[0].public_bytes(DER)

    assert await manager.replace_tainted_upstream([first_root])

    active = manager.current_x509()
    assert active is not None and active.slot_id != old.slot_id
    assert manager.next_x509() is not None and manager.next_x509().status is SlotStatus.OLD  # type: ignore[union-attr]
    chain = await svid_chain(manager, fake_clock)
    assert verify_svid(chain, [second.root[0].public_bytes(DER)], fake_clock.now())
    assert tainted_roots(ca_store) == [first_root]
    assert len(disk.asked_at) == 2

    # Tainting a root the active CA does not chain to replaces nothing; again is harmless.
    assert not await manager.replace_tainted_upstream([first_root])
    assert manager.current_x509() == active
    assert len(disk.asked_at) == 2


async def test_a_prepared_ca_under_the_tainted_root_is_prepared_again(
    key_manager: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
    upstream: tuple[CountingDisk, UpstreamPki, Path],
) -> None:
    disk, first, directory = upstream
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=disk
    )
    await manager.start()
    prepared = await manager.prepare_x509_now()  # still under the first root
    UpstreamPki("second", fake_clock.now()).write(directory)

    assert await manager.replace_tainted_upstream([first.root[0].public_bytes(DER)])

    active = manager.current_x509()
    assert active is not None and active.authority_id != prepared.authority_id
    assert len(disk.asked_at) == 3


async def test_a_prepared_ca_under_another_root_is_activated_as_it_is(
    key_manager: InProcessKeyManager,
    ca_store: MemoryCaStore,
    fake_clock: FakeClock,
    upstream: tuple[CountingDisk, UpstreamPki, Path],
) -> None:
    disk, first, directory = upstream
    manager = CaManager(
        SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock, upstream=disk
    )
    await manager.start()
    UpstreamPki("second", fake_clock.now()).write(directory)
    prepared = await manager.prepare_x509_now()  # under the second root

    assert await manager.replace_tainted_upstream([first.root[0].public_bytes(DER)])

    assert manager.current_x509() == replace(prepared, status=SlotStatus.ACTIVE)
    assert len(disk.asked_at) == 2


async def test_without_an_upstream_there_is_no_upstream_root_to_act_on(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    manager = CaManager(SETTINGS, key_manager=key_manager, store=ca_store, clock=fake_clock)
    await manager.start()
    with pytest.raises(FailedPreconditionError, match="no upstream authority"):
        await manager.replace_tainted_upstream([manager.x509_ca.der])
