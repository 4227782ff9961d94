"""The contract every upstream authority keeps, as tests a plugin's test module inherits.

Subclass :class:`UpstreamAuthorityContract` and provide three fixtures: ``upstream_authority``,
an instance configured with ``host_services`` (trust domain ``example.org``, the fake clock)
and closed after the test; ``upstream_registration``, the plugin's registration; and
``upstream_misconfigurations``, settings the plugin must refuse with the key they name::

    class TestDiskUpstreamAuthority(UpstreamAuthorityContract):
        @pytest_asyncio.fixture
        async def upstream_authority(self, host_services, ca_files):
            upstream = DiskUpstreamAuthority()
            await upstream.configure(ca_files.config(), host_services)
            yield upstream
            await upstream.close()

        @pytest.fixture
        def upstream_registration(self):
            return REGISTRATION

        @pytest.fixture
        def upstream_misconfigurations(self, ca_files):
            return [Misconfiguration({"cert_file_path": "/nonexistent"}, "cert_file_path")]

What is checked: a minted CA carries the CSR's key and the trust domain's ID, is a CA
(``basicConstraints`` CA:TRUE, keyCertSign), lives the preferred TTL from the host clock's now
unless its issuer ends sooner, and chains to the returned roots through the returned chain
(``cryptography``'s path validation and an explicit signature check of every link); a CSR that
does not parse, whose signature fails, or whose URI SAN is not the trust domain's ID is refused
with :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the reason; ``publish_jwt_key``
returns the upstream's whole key set, or ``[]`` when the upstream keeps no JWT keys; a bundle
subscription either ends at once or starts with the roots ``mint_x509_ca`` returns; and each
misconfiguration fails (at loading or at configure) with an error naming its key. An upstream
that signs on a clock of its own (a remote CA) overrides the ``fake_clock`` fixture with a clock
near it.
"""

from __future__ import annotations

__all__ = [
    "TTL_TOLERANCE",
    "Misconfiguration",
    "UpstreamAuthorityContract",
    "make_ca_csr",
    "verify_minted_chain",
]

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from pyspire_sdk.bundle import JwtAuthority
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, InvalidArgumentError, PluginError
from pyspire_sdk.plugin import HostServices, PluginRegistration
from pyspire_sdk.plugins.upstream_authority import (
    UpstreamAuthority,
    UpstreamBundle,
    UpstreamX509CA,
)
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.upstream_ca import CA_POLICY, EE_POLICY

TTL_TOLERANCE = timedelta(minutes=1)
"""How far a minted CA's notAfter may be from the host clock's now plus the preferred TTL."""

SUBSCRIPTION_TIMEOUT = 10.0
"""Seconds the first item (or the end) of a bundle subscription may take."""


@dataclass(frozen=True)
class Misconfiguration:
    """Settings (the plugin's TOML table) the plugin must refuse, and the key the error must
    name."""

    settings: Mapping[str, Any]
    field: str


def make_ca_csr(
    uris: Sequence[str],
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    subject: x509.Name | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A DER CSR for a server CA, as the server makes one: ``uris`` as its URI SANs, ``C=US,
    O=SPIFFE`` as its subject unless given. Returns the key and the CSR."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    name = subject or x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
        ]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri) for uri in uris]),
            critical=False,
        )
    csr = builder.sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.DER)


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _throwaway_leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A leaf the minted CA signs, as SPIRE checks a minted CA: valid while the CA is."""
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throwaway")]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(1)
        .not_valid_before(ca.not_valid_before_utc)
        .not_valid_after(ca.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def verify_minted_chain(
    minted: UpstreamX509CA, ca_key: ec.EllipticCurvePrivateKey, at: datetime
) -> list[x509.Certificate]:
    """Verify that a leaf signed by the minted CA chains through ``minted.ca_chain`` to one of
    ``minted.upstream_roots`` at ``at``; the verified path, leaf first, ending at a root."""
    chain = [x509.load_der_x509_certificate(der) for der in minted.ca_chain]
    roots = [x509.load_der_x509_certificate(der) for der in minted.upstream_roots]
    leaf = _throwaway_leaf(chain[0], ca_key)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(roots))
        .time(at)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )
    path = list(verifier.verify(leaf, chain).chain)
    for child, parent in itertools.pairwise(path):
        child.verify_directly_issued_by(parent)
    assert path[-1] in roots, "the verified path does not end at a returned root"
    return path


class UpstreamAuthorityContract:
    """Tests every upstream authority must pass; see the module documentation."""

    @pytest.fixture
    def upstream_authority(self) -> UpstreamAuthority:
        """A configured upstream authority; the subclass must override this."""
        pytest.fail(
            "an UpstreamAuthorityContract subclass must provide the 'upstream_authority' fixture"
        )

    @pytest.fixture
    def upstream_registration(self) -> PluginRegistration[Any, UpstreamAuthority]:
        """The plugin's registration (its configuration type and factory)."""
        pytest.fail(
            "an UpstreamAuthorityContract subclass must provide the 'upstream_registration' "
            "fixture: the PluginRegistration its hook returns"
        )

    @pytest.fixture
    def upstream_misconfigurations(self) -> Sequence[Misconfiguration]:
        """Settings the plugin must refuse, each with the key its error names."""
        pytest.fail(
            "an UpstreamAuthorityContract subclass must provide the 'upstream_misconfigurations' "
            "fixture: settings the plugin refuses and the key each error names (an empty list "
            "when the plugin has no settings)"
        )

    @staticmethod
    def _trust_domain(host_services: HostServices) -> TrustDomain:
        return host_services.trust_domain

    async def _mint(
        self, upstream: UpstreamAuthority, host_services: HostServices, ttl: timedelta
    ) -> tuple[ec.EllipticCurvePrivateKey, UpstreamX509CA]:
        key, csr = make_ca_csr([str(self._trust_domain(host_services).id)])
        minted = await upstream.mint_x509_ca(csr, ttl)
        assert isinstance(minted, UpstreamX509CA)
        return key, minted

    # -- minting ------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_minted_ca_is_a_ca_for_the_csr_key(
        self, upstream_authority: UpstreamAuthority, host_services: HostServices
    ) -> None:
        key, minted = await self._mint(upstream_authority, host_services, timedelta(hours=1))
        ca = x509.load_der_x509_certificate(minted.ca_certificate)

        assert _spki(ca.public_key()) == _spki(key.public_key())
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca, "basicConstraints CA is not set"
        assert constraints.critical, "basicConstraints must be critical"
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign, "keyUsage lacks keyCertSign"
        san = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == [str(self._trust_domain(host_services).id)]

    @pytest.mark.asyncio
    async def test_minted_ca_chains_to_the_returned_roots(
        self, upstream_authority: UpstreamAuthority, host_services: HostServices
    ) -> None:
        key, minted = await self._mint(upstream_authority, host_services, timedelta(hours=1))
        ca = x509.load_der_x509_certificate(minted.ca_certificate)

        path = verify_minted_chain(minted, key, ca.not_valid_before_utc + timedelta(seconds=30))

        assert path[1] == ca
        root_ders = set(minted.upstream_roots)
        assert minted.ca_certificate not in root_ders, "the minted CA must not be a root"
        for der in minted.ca_chain[1:]:
            assert der not in root_ders, "ca_chain must stop below the roots"

    @pytest.mark.asyncio
    async def test_minted_ca_lives_the_preferred_ttl(
        self, upstream_authority: UpstreamAuthority, host_services: HostServices
    ) -> None:
        ttl = timedelta(hours=1)
        now = host_services.clock.now()
        _, minted = await self._mint(upstream_authority, host_services, ttl)
        ca = x509.load_der_x509_certificate(minted.ca_certificate)

        assert abs(ca.not_valid_after_utc - (now + ttl)) <= TTL_TOLERANCE, (
            f"asked for {ttl} at {now.isoformat()}, got a CA valid until "
            f"{ca.not_valid_after_utc.isoformat()}"
        )
        assert ca.not_valid_before_utc <= now

    @pytest.mark.asyncio
    async def test_minted_ca_never_outlives_its_issuer(
        self, upstream_authority: UpstreamAuthority, host_services: HostServices
    ) -> None:
        key, minted = await self._mint(upstream_authority, host_services, timedelta(days=36500))
        ca = x509.load_der_x509_certificate(minted.ca_certificate)

        path = verify_minted_chain(minted, key, ca.not_valid_before_utc + timedelta(seconds=30))

        issuer = path[2]
        assert ca.not_valid_after_utc <= issuer.not_valid_after_utc, (
            f"the minted CA ends at {ca.not_valid_after_utc.isoformat()}, after its issuer "
            f"{issuer.subject.rfc4514_string()!r} ({issuer.not_valid_after_utc.isoformat()})"
        )
        assert ca.not_valid_after_utc > host_services.clock.now()

    @pytest.mark.asyncio
    async def test_each_csr_gets_a_ca_of_its_own(
        self, upstream_authority: UpstreamAuthority, host_services: HostServices
    ) -> None:
        results = await asyncio.gather(
            *(self._mint(upstream_authority, host_services, timedelta(hours=1)) for _ in range(4))
        )
        serials = set()
        for key, minted in results:
            ca = x509.load_der_x509_certificate(minted.ca_certificate)
            assert _spki(ca.public_key()) == _spki(key.public_key())
            serials.add(ca.serial_number)
        assert len(serials) == len(results)

    # -- refusing -----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("case", "reason"),
        [
            ("garbage", r"(?i)csr"),
            ("bad-signature", r"(?i)signature"),
            ("no-uri-san", r"(?i)uri"),
            ("two-uri-sans", r"(?i)uri"),
            ("other-trust-domain", r"(?i)trust domain"),
            ("workload-id", r"(?i)trust domain"),
            ("not-spiffe", r"(?i)spiffe"),
        ],
    )
    @pytest.mark.asyncio
    async def test_bad_csrs_are_refused_with_the_reason(
        self,
        upstream_authority: UpstreamAuthority,
        host_services: HostServices,
        case: str,
        reason: str,
    ) -> None:
        own = str(self._trust_domain(host_services).id)
        csrs = {
            "no-uri-san": lambda: make_ca_csr([])[1],
            "two-uri-sans": lambda: make_ca_csr([own, own + "/second"])[1],
            "other-trust-domain": lambda: make_ca_csr(["spiffe://elsewhere.test"])[1],
            "workload-id": lambda: make_ca_csr([own + "/workload"])[1],
            "not-spiffe": lambda: make_ca_csr(["https://example.org/"])[1],
        }
        if case == "garbage":
            csr = b"this is not a certificate signing request"
        elif case == "bad-signature":
            good = bytearray(make_ca_csr([own])[1])
            good[-1] ^= 0x01
            csr = bytes(good)
        else:
            csr = csrs[case]()
        with pytest.raises(InvalidArgumentError, match=reason):
            await upstream_authority.mint_x509_ca(csr, timedelta(hours=1))

    # -- JWT keys and bundle updates ----------------------------------------------------------

    @pytest.mark.asyncio
    async def test_publish_jwt_key_returns_the_key_set_or_nothing(
        self, upstream_authority: UpstreamAuthority, host_services: HostServices
    ) -> None:
        expires = host_services.clock.now() + timedelta(hours=1)
        first = JwtAuthority(
            key_id="contract-first",
            public_key=_spki(ec.generate_private_key(ec.SECP256R1()).public_key()),
            expires_at=expires,
        )
        second = JwtAuthority(
            key_id="contract-second",
            public_key=_spki(ec.generate_private_key(ec.SECP256R1()).public_key()),
            expires_at=expires,
        )
        published = await upstream_authority.publish_jwt_key(first)
        assert isinstance(published, list)
        if not published:
            # The upstream keeps no JWT keys: the server keeps its own in the bundle.
            assert await upstream_authority.publish_jwt_key(second) == []
            return
        assert all(isinstance(key, JwtAuthority) for key in published)
        assert first in published, "the published key is missing from the returned key set"
        again = await upstream_authority.publish_jwt_key(second)
        assert first in again, "the key set must be complete"
        assert second in again, "the key set must be complete"

    @pytest.mark.asyncio
    async def test_bundle_subscription_ends_or_starts_with_the_roots(
        self, upstream_authority: UpstreamAuthority, host_services: HostServices
    ) -> None:
        _, minted = await self._mint(upstream_authority, host_services, timedelta(hours=1))
        updates = upstream_authority.subscribe_to_bundle_updates()
        try:
            first = await asyncio.wait_for(anext(updates), SUBSCRIPTION_TIMEOUT)
        except StopAsyncIteration:
            return  # no updates: the server relies on the roots mint_x509_ca returns
        finally:
            closing = getattr(updates, "aclose", None)
            if closing is not None:
                await closing()
        assert isinstance(first, UpstreamBundle)
        assert set(first.x509_roots) == set(minted.upstream_roots)

    # -- configuration ------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_misconfigurations_are_refused_naming_the_key(
        self,
        upstream_registration: PluginRegistration[Any, UpstreamAuthority],
        upstream_misconfigurations: Sequence[Misconfiguration],
        host_services: HostServices,
    ) -> None:
        if not upstream_misconfigurations:
            pytest.skip("the plugin declares no misconfigurations to refuse")
        for wrong in upstream_misconfigurations:
            message = await _refusal(upstream_registration, wrong, host_services)
            assert wrong.field in message, (
                f"settings {dict(wrong.settings)!r} were refused without naming "
                f"{wrong.field!r}: {message}"
            )


async def _refusal(
    registration: PluginRegistration[Any, UpstreamAuthority],
    wrong: Misconfiguration,
    host_services: HostServices,
) -> str:
    """The error text of loading and configuring ``wrong.settings``; fails when both pass."""
    try:
        config = load_config(registration.config_type, wrong.settings)
    except ConfigError as error:
        return str(error)
    instance = registration.factory()
    try:
        await instance.configure(config, host_services)
    except (ConfigError, PluginError) as error:
        return str(error)
    finally:
        await instance.close()
    pytest.fail(f"settings {dict(wrong.settings)!r} were accepted; expected a refusal")
