"""The upstream authority contract suite, proved on an in-memory upstream CA.

The reference upstream holds a self-signed root and an intermediate, signs with
:class:`pyspire_sdk.upstream_ca.UpstreamCa`, and passes the suite. Broken variants, each
breaking one promise, show that the suite's test for that promise fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyspire_sdk.bundle import JwtAuthority
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue
from pyspire_sdk.plugin import HostServices, PluginRegistration
from pyspire_sdk.plugins.upstream_authority import (
    UpstreamAuthority,
    UpstreamBundle,
    UpstreamX509CA,
)
from pyspire_sdk.testing.upstream_authority_contract import (
    Misconfiguration,
    UpstreamAuthorityContract,
    make_ca_csr,
)
from pyspire_sdk.upstream_ca import UpstreamCa

_DER = serialization.Encoding.DER


def _ca(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    now: datetime,
    ttl: timedelta,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer[1] if issuer else key, hashes.SHA256())
    )


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    validity: timedelta = setting(
        timedelta(days=30), description="how long the intermediate is valid"
    )

    def validate(self) -> list[ConfigIssue]:
        if self.validity <= timedelta(0):
            return [ConfigIssue("validity", "must be positive")]
        return []


class MemoryUpstream:
    """A root and an intermediate in memory; mints with the intermediate."""

    def __init__(self) -> None:
        self.ca: UpstreamCa | None = None
        self.host: HostServices | None = None
        self.jwt_keys: list[JwtAuthority] = []

    async def configure(self, config: MemoryConfig, host: HostServices) -> None:
        now = host.clock.now()
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _ca("root", root_key, None, now, timedelta(days=365))
        key = ec.generate_private_key(ec.SECP256R1())
        intermediate = _ca("intermediate", key, (root, root_key), now, config.validity)
        self.ca = UpstreamCa(
            certificate=intermediate,
            private_key=key,
            chain=(intermediate,),
            roots=(root,),
            trust_domain=host.trust_domain,
        )
        self.host = host

    async def close(self) -> None:
        return None

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        assert self.ca is not None and self.host is not None
        return self.ca.mint(csr_der, preferred_ttl, self.host.clock.now())

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        self.jwt_keys.append(key)
        return list(self.jwt_keys)

    async def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        assert self.ca is not None
        yield UpstreamBundle(x509_roots=(self.ca.roots[0].public_bytes(_DER),))


REGISTRATION: PluginRegistration[Any, UpstreamAuthority] = PluginRegistration(
    name="memory", config_type=MemoryConfig, factory=MemoryUpstream
)


class TestMemoryUpstreamPassesTheContract(UpstreamAuthorityContract):
    @pytest.fixture
    async def upstream_authority(self, host_services: HostServices) -> AsyncIterator[Any]:
        upstream = MemoryUpstream()
        await upstream.configure(MemoryConfig(), host_services)
        yield upstream
        await upstream.close()

    @pytest.fixture
    def upstream_registration(self) -> PluginRegistration[Any, UpstreamAuthority]:
        return REGISTRATION

    @pytest.fixture
    def upstream_misconfigurations(self) -> Sequence[Misconfiguration]:
        return [
            Misconfiguration({"validity": "-1h"}, "validity"),
            Misconfiguration({"validity": "soon"}, "validity"),
        ]


def test_the_reference_is_an_upstream_authority() -> None:
    assert isinstance(MemoryUpstream(), UpstreamAuthority)


class _SignsItsOwnKey(MemoryUpstream):
    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        _, other = make_ca_csr(["spiffe://example.org"])
        return await super().mint_x509_ca(other, preferred_ttl)


class _NotACa(MemoryUpstream):
    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        assert self.ca is not None and self.host is not None
        minted = self.ca.sign_csr(csr_der, preferred_ttl, self.host.clock.now())
        builder = (
            x509.CertificateBuilder()
            .subject_name(minted.subject)
            .issuer_name(minted.issuer)
            .public_key(minted.public_key())  # type: ignore[arg-type]
            .serial_number(minted.serial_number)
            .not_valid_before(minted.not_valid_before_utc)
            .not_valid_after(minted.not_valid_after_utc)
        )
        for extension in minted.extensions:
            if isinstance(extension.value, x509.BasicConstraints):
                continue
            builder = builder.add_extension(extension.value, critical=extension.critical)
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        certificate = builder.sign(self.ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
        return UpstreamX509CA(
            ca_chain=tuple(c.public_bytes(_DER) for c in (certificate, *self.ca.chain)),
            upstream_roots=tuple(r.public_bytes(_DER) for r in self.ca.roots),
        )


class _IgnoresTheTtl(MemoryUpstream):
    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        return await super().mint_x509_ca(csr_der, timedelta(days=2))


class _OutlivesItsIssuer(MemoryUpstream):
    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        assert self.ca is not None
        far = self.ca.certificate.not_valid_after_utc + timedelta(days=400)
        self.ca = replace(self.ca, certificate=_extend(self.ca, far))
        return await super().mint_x509_ca(csr_der, preferred_ttl)


def _extend(ca: UpstreamCa, until: datetime) -> x509.Certificate:
    """A copy of the signing certificate, self-signed and valid until ``until``: the cap on a
    minted CA moves past the real issuer's end."""
    certificate = ca.certificate
    return (
        x509.CertificateBuilder()
        .subject_name(certificate.subject)
        .issuer_name(certificate.issuer)
        .public_key(certificate.public_key())  # type: ignore[arg-type]
        .serial_number(certificate.serial_number)
        .not_valid_before(certificate.not_valid_before_utc)
        .not_valid_after(until)
        .sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )


class _WrongRoots(MemoryUpstream):
    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        minted = await super().mint_x509_ca(csr_der, preferred_ttl)
        assert self.host is not None
        key = ec.generate_private_key(ec.SECP256R1())
        stranger = _ca("stranger", key, None, self.host.clock.now(), timedelta(days=1))
        return UpstreamX509CA(
            ca_chain=minted.ca_chain, upstream_roots=(stranger.public_bytes(_DER),)
        )


class _SignsAnything(MemoryUpstream):
    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        _, good = make_ca_csr(["spiffe://example.org"])
        return await super().mint_x509_ca(good, preferred_ttl)


class _ForgetsKeys(MemoryUpstream):
    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        await super().publish_jwt_key(key)
        return [key]


class _OtherRootsInUpdates(MemoryUpstream):
    async def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        key = ec.generate_private_key(ec.SECP256R1())
        assert self.host is not None
        stranger = _ca("stranger", key, None, self.host.clock.now(), timedelta(days=1))
        yield UpstreamBundle(x509_roots=(stranger.public_bytes(_DER),))


Run = Callable[[UpstreamAuthorityContract, Any, HostServices], Awaitable[None]]

CASES: list[tuple[type[MemoryUpstream], str, Run]] = [
    (_SignsItsOwnKey, "csr-key", lambda s, u, h: s.test_minted_ca_is_a_ca_for_the_csr_key(u, h)),
    (_NotACa, "not-a-ca", lambda s, u, h: s.test_minted_ca_is_a_ca_for_the_csr_key(u, h)),
    (
        _NotACa,
        "not-a-ca-chain",
        lambda s, u, h: s.test_minted_ca_chains_to_the_returned_roots(u, h),
    ),
    (_IgnoresTheTtl, "ttl", lambda s, u, h: s.test_minted_ca_lives_the_preferred_ttl(u, h)),
    (
        _OutlivesItsIssuer,
        "outlives",
        lambda s, u, h: s.test_minted_ca_never_outlives_its_issuer(u, h),
    ),
    (_WrongRoots, "roots", lambda s, u, h: s.test_minted_ca_chains_to_the_returned_roots(u, h)),
    (
        _SignsAnything,
        "bad-csr",
        lambda s, u, h: s.test_bad_csrs_are_refused_with_the_reason(
            u, h, "other-trust-domain", "trust domain"
        ),
    ),
    (
        _ForgetsKeys,
        "jwt-key-set",
        lambda s, u, h: s.test_publish_jwt_key_returns_the_key_set_or_nothing(u, h),
    ),
    (
        _OtherRootsInUpdates,
        "bundle-updates",
        lambda s, u, h: s.test_bundle_subscription_ends_or_starts_with_the_roots(u, h),
    ),
]


@pytest.mark.parametrize(
    ("broken", "run"), [(c[0], c[2]) for c in CASES], ids=[c[1] for c in CASES]
)
async def test_the_suite_fails_a_broken_upstream(
    broken: type[MemoryUpstream], run: Run, host_services: HostServices
) -> None:
    upstream = broken()
    await upstream.configure(MemoryConfig(), host_services)
    with pytest.raises((Exception, pytest.fail.Exception)):  # any failure counts
        await run(UpstreamAuthorityContract(), upstream, host_services)


@pytest.mark.parametrize(
    ("broken", "run"), [(c[0], c[2]) for c in CASES], ids=[c[1] for c in CASES]
)
async def test_the_same_tests_pass_on_the_reference(
    broken: type[MemoryUpstream], run: Run, host_services: HostServices
) -> None:
    upstream = MemoryUpstream()
    await upstream.configure(MemoryConfig(), host_services)
    await run(UpstreamAuthorityContract(), upstream, host_services)


async def test_an_accepted_misconfiguration_fails_the_suite(host_services: HostServices) -> None:
    with pytest.raises(pytest.fail.Exception, match="were accepted"):
        await UpstreamAuthorityContract().test_misconfigurations_are_refused_naming_the_key(
            REGISTRATION, [Misconfiguration({"validity": "1h"}, "validity")], host_services
        )


async def test_a_refusal_naming_another_key_fails_the_suite(host_services: HostServices) -> None:
    with pytest.raises(AssertionError, match="without naming 'lifetime'"):
        await UpstreamAuthorityContract().test_misconfigurations_are_refused_naming_the_key(
            REGISTRATION, [Misconfiguration({"validity": "-1h"}, "lifetime")], host_services
        )


async def test_an_upstream_without_updates_passes_the_subscription_test(
    host_services: HostServices,
) -> None:
    class Silent(MemoryUpstream):
        async def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
            return
            yield

    upstream = Silent()
    await upstream.configure(MemoryConfig(), host_services)
    await UpstreamAuthorityContract().test_bundle_subscription_ends_or_starts_with_the_roots(
        upstream, host_services
    )
