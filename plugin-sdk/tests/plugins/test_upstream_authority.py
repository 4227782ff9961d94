"""The upstream authority interface, proved on an in-memory upstream CA built in the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins import upstream_authority
from pyspire_sdk.plugins.upstream_authority import (
    UpstreamAuthority,
    UpstreamBundle,
    UpstreamX509CA,
)
from pyspire_sdk.spiffeid import TrustDomain

NOW = datetime(2030, 1, 1, tzinfo=UTC)
MAX_TTL = timedelta(hours=48)


def _root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream root")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


class MemoryUpstream:
    """Signs CA CSRs with a root held in memory; its roots never change."""

    def __init__(self) -> None:
        self._key, self._root = _root()
        self._jwt_keys: list[JwtAuthority] = []

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError:
            raise InvalidArgumentError("csr is not a DER PKCS#10 request") from None
        ttl = min(preferred_ttl, MAX_TTL)
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self._root.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW)
            .not_valid_after(NOW + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(san, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return UpstreamX509CA(
            ca_chain=(certificate.public_bytes(serialization.Encoding.DER),),
            upstream_roots=(self._root.public_bytes(serialization.Encoding.DER),),
        )

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        self._jwt_keys.append(key)
        return list(self._jwt_keys)

    async def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        return
        yield  # an async generator that ends at once: "no updates"


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def test_memory_upstream_is_an_upstream_authority() -> None:
    assert isinstance(MemoryUpstream(), UpstreamAuthority)


async def test_minted_ca_is_signed_by_the_upstream_root() -> None:
    upstream = MemoryUpstream()
    minted = await upstream.mint_x509_ca(_csr(), timedelta(hours=100))

    ca = x509.load_der_x509_certificate(minted.ca_certificate)
    root = x509.load_der_x509_certificate(minted.upstream_roots[0])
    ca.verify_directly_issued_by(root)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == MAX_TTL
    assert minted.ca_chain[0] == minted.ca_certificate


async def test_a_bad_csr_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="csr"):
        await MemoryUpstream().mint_x509_ca(b"not a csr", timedelta(hours=1))


async def test_publish_jwt_key_returns_the_full_key_set() -> None:
    upstream = MemoryUpstream()
    first = JwtAuthority(key_id="a", public_key=b"spki-a")
    second = JwtAuthority(key_id="b", public_key=b"spki-b")
    assert await upstream.publish_jwt_key(first) == [first]
    assert await upstream.publish_jwt_key(second) == [first, second]


async def test_no_updates_is_an_iterator_that_ends_at_once() -> None:
    updates = [update async for update in MemoryUpstream().subscribe_to_bundle_updates()]
    assert updates == []


@pytest.mark.parametrize(
    ("chain", "roots", "message"),
    [
        ((), (b"root",), "ca_chain is empty"),
        ((b"ca",), (), "upstream_roots is empty"),
        ((b"ca", b""), (b"root",), r"ca_chain\[1\] is not a non-empty DER"),
        ((b"ca",), ("root",), r"upstream_roots\[0\] is not a non-empty DER"),
    ],
)
def test_upstream_x509_ca_refuses_missing_certificates(
    chain: tuple[bytes, ...], roots: tuple[bytes, ...], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        UpstreamX509CA(ca_chain=chain, upstream_roots=roots)


def test_upstream_bundle_needs_roots() -> None:
    with pytest.raises(InvalidArgumentError, match="x509_roots is empty"):
        UpstreamBundle(x509_roots=())
    bundle = UpstreamBundle(x509_roots=(b"root",))
    assert bundle.jwt_authorities == ()


def test_an_upstream_servers_bundle_keeps_its_taints() -> None:
    jwt = JwtAuthority(key_id="k", public_key=b"spki")
    bundle = Bundle(
        trust_domain=TrustDomain("example.org"),
        x509_authorities=(X509Authority(b"old", tainted=True), X509Authority(b"new")),
        jwt_authorities=(jwt,),
    )
    assert UpstreamBundle.of(bundle) == UpstreamBundle(
        x509_roots=(b"old", b"new"), jwt_authorities=(jwt,), tainted_x509_roots=(b"old",)
    )
    with pytest.raises(InvalidArgumentError, match=r"tainted_x509_roots\[0\] is not one of"):
        UpstreamBundle(x509_roots=(b"new",), tainted_x509_roots=(b"old",))


def test_hookspec_is_documented() -> None:
    hook = upstream_authority.pyspire_upstream_authorities
    assert hasattr(hook, "pyspire_spec")
    assert hook.__doc__ and "at most one" in hook.__doc__
