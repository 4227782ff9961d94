"""The ``disk`` upstream authority: the SDK's contract suite in both of SPIRE's layouts (one
self-signed CA; a signing CA with intermediates under roots in a bundle file), then what is
particular to files: modes, reloading, and the chain SPIRE builds."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyspire_upstreamauthority_disk import DiskUpstreamAuthority, DiskUpstreamConfig
from pyspire_upstreamauthority_disk.plugin import pyspire_upstream_authorities

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, InvalidArgumentError, UnavailableError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, HostServices, PluginRegistration
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.readme import assert_readme_documents
from pyspire_sdk.testing.upstream_authority_contract import (
    Misconfiguration,
    UpstreamAuthorityContract,
    make_ca_csr,
    verify_minted_chain,
)

README = Path(__file__).resolve().parent.parent / "README.md"
TD_ID = "spiffe://example.org"
DER = serialization.Encoding.DER

Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _ca(name: str, issuer: Issuer | None, now: datetime, ttl: timedelta) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class CaFiles:
    """Upstream CA files in ``directory``: ``root`` signs ``intermediate``, which signs
    ``signer``, the CA that mints; or, self-signed, ``signer`` is the root."""

    directory: Path
    signer: Issuer
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    with_bundle: bool

    @classmethod
    def make(
        cls,
        directory: Path,
        now: datetime,
        *,
        with_bundle: bool,
        ttl: timedelta = timedelta(days=30),
    ) -> CaFiles:
        directory.mkdir(exist_ok=True)
        if not with_bundle:
            signer = _ca("upstream root", None, now, ttl)
            files = cls(directory, signer, (signer[0],), (signer[0],), with_bundle)
        else:
            root = _ca("upstream root", None, now, timedelta(days=365))
            intermediate = _ca("upstream intermediate", root, now, timedelta(days=180))
            signer = _ca("upstream signer", intermediate, now, ttl)
            files = cls(directory, signer, (signer[0], intermediate[0]), (root[0],), with_bundle)
        files.write()
        return files

    @property
    def cert(self) -> Path:
        return self.directory / "upstream.crt"

    @property
    def key(self) -> Path:
        return self.directory / "upstream.key"

    @property
    def bundle(self) -> Path:
        return self.directory / "bundle.crt"

    def write(self) -> None:
        self.cert.write_bytes(_pem(*self.chain))
        self.key.touch(mode=0o600)
        os.chmod(self.key, 0o600)
        self.key.write_bytes(_key_pem(self.signer[1]))
        if self.with_bundle:
            self.bundle.write_bytes(_pem(*self.roots))

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "cert_file_path": str(self.cert),
            "key_file_path": str(self.key),
        }
        if self.with_bundle:
            settings["bundle_file_path"] = str(self.bundle)
        return settings

    def config(self) -> DiskUpstreamConfig:
        return load_config(DiskUpstreamConfig, self.settings())


REGISTRATION = pyspire_upstream_authorities()[0]


async def configured(files: CaFiles, host_services: HostServices) -> DiskUpstreamAuthority:
    upstream = DiskUpstreamAuthority()
    await upstream.configure(files.config(), host_services)
    return upstream


class _DiskContract(UpstreamAuthorityContract):
    with_bundle = False

    @pytest.fixture
    def ca_files(self, tmp_path: Path, fake_clock: FakeClock) -> CaFiles:
        return CaFiles.make(tmp_path, fake_clock.now(), with_bundle=self.with_bundle)

    @pytest_asyncio.fixture
    async def upstream_authority(
        self, ca_files: CaFiles, host_services: HostServices
    ) -> AsyncIterator[UpstreamAuthority]:
        upstream = await configured(ca_files, host_services)
        yield upstream
        await upstream.close()

    @pytest.fixture
    def upstream_registration(self) -> PluginRegistration[Any, UpstreamAuthority]:
        return REGISTRATION

    @pytest.fixture
    def upstream_misconfigurations(
        self, ca_files: CaFiles, tmp_path: Path, fake_clock: FakeClock
    ) -> Sequence[Misconfiguration]:
        good = ca_files.settings()
        loose = tmp_path / "loose.key"
        loose.write_bytes(ca_files.key.read_bytes())
        loose.chmod(0o640)
        other = CaFiles.make(tmp_path / "other", fake_clock.now(), with_bundle=True)
        return [
            Misconfiguration({"key_file_path": str(ca_files.key)}, "cert_file_path"),
            Misconfiguration(
                {**good, "cert_file_path": str(tmp_path / "absent.crt")}, "cert_file_path"
            ),
            Misconfiguration({**good, "key_file_path": str(loose)}, "key_file_path"),
            Misconfiguration(
                {**good, "key_file_path": str(tmp_path / "absent.key")}, "key_file_path"
            ),
            Misconfiguration({**good, "key_file_path": str(other.key)}, "cert_file_path"),
            Misconfiguration({**good, "bundle_file_path": ""}, "bundle_file_path"),
            Misconfiguration({**good, "bundle_file_path": str(other.bundle)}, "bundle_file_path"),
            Misconfiguration({**good, "cert_path": str(ca_files.cert)}, "cert_path"),
        ]


class TestSelfSignedUpstream(_DiskContract):
    with_bundle = False


class TestUpstreamWithIntermediatesAndRoots(_DiskContract):
    with_bundle = True


# -- the chain SPIRE builds ------------------------------------------------------------------


@pytest.fixture
def chained(tmp_path: Path, fake_clock: FakeClock) -> CaFiles:
    return CaFiles.make(tmp_path, fake_clock.now(), with_bundle=True)


async def test_chain_carries_the_cert_file_and_the_bundle_holds_the_roots(
    chained: CaFiles, host_services: HostServices
) -> None:
    upstream = await configured(chained, host_services)
    key, csr = make_ca_csr([TD_ID])
    minted = await upstream.mint_x509_ca(csr, timedelta(hours=1))

    assert minted.ca_chain[1:] == tuple(c.public_bytes(DER) for c in chained.chain)
    assert minted.upstream_roots == tuple(c.public_bytes(DER) for c in chained.roots)
    ca = x509.load_der_x509_certificate(minted.ca_certificate)
    path = verify_minted_chain(minted, key, host_services.clock.now())
    assert path[1:] == [ca, *chained.chain, *chained.roots]


async def test_a_self_signed_upstream_is_the_root_and_not_in_the_chain(
    tmp_path: Path, fake_clock: FakeClock, host_services: HostServices
) -> None:
    files = CaFiles.make(tmp_path, fake_clock.now(), with_bundle=False)
    upstream = await configured(files, host_services)
    minted = await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], timedelta(hours=1))

    assert len(minted.ca_chain) == 1
    assert minted.upstream_roots == (files.signer[0].public_bytes(DER),)


async def test_minted_ca_is_shaped_as_spire_shapes_it(
    chained: CaFiles, host_services: HostServices, fake_clock: FakeClock
) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "1234"),
        ]
    )
    key = ec.generate_private_key(ec.SECP256R1())
    policies = x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier("1.2.3.4"), None)]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(TD_ID)]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(policies, critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(DER)
    )
    upstream = await configured(chained, host_services)
    minted = await upstream.mint_x509_ca(csr, timedelta(hours=6))
    ca = x509.load_der_x509_certificate(minted.ca_certificate)

    assert ca.subject == subject
    assert ca.issuer == chained.signer[0].subject
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=None)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ca.extensions.get_extension_for_class(x509.CertificatePolicies).value == policies
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    signer_ski = chained.signer[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == signer_ski.value.digest
    now = fake_clock.now().replace(microsecond=0)
    assert ca.not_valid_before_utc == now - timedelta(seconds=10)
    assert ca.not_valid_after_utc == now + timedelta(hours=6)


async def test_no_preferred_ttl_means_one_hour(
    chained: CaFiles, host_services: HostServices, fake_clock: FakeClock
) -> None:
    upstream = await configured(chained, host_services)
    minted = await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], timedelta(0))
    ca = x509.load_der_x509_certificate(minted.ca_certificate)
    assert ca.not_valid_after_utc == fake_clock.now().replace(microsecond=0) + timedelta(hours=1)


async def test_ttl_stops_at_the_signing_ca_end(
    tmp_path: Path, host_services: HostServices, fake_clock: FakeClock
) -> None:
    files = CaFiles.make(tmp_path, fake_clock.now(), with_bundle=True, ttl=timedelta(hours=3))
    upstream = await configured(files, host_services)
    minted = await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], timedelta(hours=24))
    ca = x509.load_der_x509_certificate(minted.ca_certificate)
    assert ca.not_valid_after_utc == files.signer[0].not_valid_after_utc


async def test_an_expired_upstream_signs_nothing(
    chained: CaFiles, host_services: HostServices, fake_clock: FakeClock
) -> None:
    upstream = await configured(chained, host_services)
    await fake_clock.advance(timedelta(days=31).total_seconds())
    with pytest.raises(UnavailableError, match="expired"):
        await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], timedelta(hours=1))


# -- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o660])
async def test_a_key_file_open_to_group_or_others_is_refused_naming_it(
    chained: CaFiles, host_services: HostServices, mode: int
) -> None:
    chained.key.chmod(mode)
    with pytest.raises(ConfigError, match=rf"key_file_path: {chained.key} has mode {mode:04o}"):
        await configured(chained, host_services)


async def test_a_key_file_of_mode_0400_is_fine(
    chained: CaFiles, host_services: HostServices
) -> None:
    chained.key.chmod(0o400)
    await configured(chained, host_services)


async def test_refusals_name_the_file_and_the_reason(
    chained: CaFiles, host_services: HostServices, tmp_path: Path
) -> None:
    chained.cert.write_bytes(b"not pem")
    with pytest.raises(ConfigError, match=rf"cert_file_path: {chained.cert}: holds no PEM"):
        await configured(chained, host_services)
    chained.write()
    chained.bundle.write_bytes(
        _pem(_ca("stranger", None, host_services.clock.now(), timedelta(days=1))[0])
    )
    with pytest.raises(ConfigError, match="cannot be validated with the bundle"):
        await configured(chained, host_services)


async def test_a_chain_without_a_bundle_is_refused(
    chained: CaFiles, host_services: HostServices
) -> None:
    settings = chained.settings()
    del settings["bundle_file_path"]
    upstream = DiskUpstreamAuthority()
    with pytest.raises(ConfigError, match="holds 2 certificates: without bundle_file_path"):
        await upstream.configure(load_config(DiskUpstreamConfig, settings), host_services)


async def test_replaced_files_are_used_by_the_next_mint(
    chained: CaFiles, host_services: HostServices, fake_clock: FakeClock, tmp_path: Path
) -> None:
    upstream = await configured(chained, host_services)
    first = await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], timedelta(hours=1))

    fresh = CaFiles.make(tmp_path / "fresh", fake_clock.now(), with_bundle=True)
    chained.cert.write_bytes(fresh.cert.read_bytes())
    chained.key.write_bytes(fresh.key.read_bytes())
    chained.bundle.write_bytes(fresh.bundle.read_bytes())
    key, csr = make_ca_csr([TD_ID])
    second = await upstream.mint_x509_ca(csr, timedelta(hours=1))

    assert second.upstream_roots != first.upstream_roots
    assert second.upstream_roots == (fresh.roots[0].public_bytes(DER),)
    verify_minted_chain(second, key, fake_clock.now())


async def test_files_that_stop_loading_leave_the_last_good_ones_in_use(
    chained: CaFiles,
    host_services: HostServices,
    fake_clock: FakeClock,
) -> None:
    upstream = await configured(chained, host_services)
    chained.key.chmod(0o644)
    chained.cert.write_bytes(b"torn")
    key, csr = make_ca_csr([TD_ID])
    minted = await upstream.mint_x509_ca(csr, timedelta(hours=1))
    verify_minted_chain(minted, key, fake_clock.now())
    assert minted.upstream_roots == (chained.roots[0].public_bytes(DER),)


async def test_bad_csrs_name_spire_reasons(chained: CaFiles, host_services: HostServices) -> None:
    upstream = await configured(chained, host_services)
    with pytest.raises(InvalidArgumentError, match="must have exactly one URI SAN, found 0"):
        await upstream.mint_x509_ca(make_ca_csr([])[1], timedelta(hours=1))
    with pytest.raises(InvalidArgumentError, match=r"is not the ID of trust domain 'example\.org'"):
        await upstream.mint_x509_ca(make_ca_csr([TD_ID + "/x"])[1], timedelta(hours=1))


# -- packaging -------------------------------------------------------------------------------


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(README, DiskUpstreamConfig)


def test_entry_point_is_installed() -> None:
    found = {
        entry_point.name: entry_point.value
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_point.dist is not None
        and entry_point.dist.metadata["Name"] == "pyspire-upstreamauthority-disk"
    }
    assert found == {"disk": "pyspire_upstreamauthority_disk.plugin"}
    assert REGISTRATION.name == "disk"
