"""Credential composers shape what the CA signs: the leaf and the CA certificate carry exactly
what the chain made of their templates, parsed back with cryptography, and encoded as
cryptography's builder would encode it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyspire.ca.composition import CredentialComposition, SvidKind
from pyspire.ca.manager import CaManager, CaSettings
from pyspire.ca.svid_der import DEFAULT_SVID_SUBJECT, encode_name, leaf_subject
from pyspire.ca.templates import CaSubject, ca_csr_builder
from pyspire.ca.x509svid import LeafRequest, mint_leaf
from pyspire.catalog import NamedPlugin
from pyspire_sdk.errors import InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.credential_composer import (
    CredentialComposer,
    Extension,
    JwtSvidClaims,
    SubjectAttribute,
    X509CaTemplate,
    X509SvidTemplate,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import MemoryCaStore, svid_builder
from .test_manager import RootUpstream
from .test_x509svid import make_ca

TD = TrustDomain("example.org")
WORKLOAD = SpiffeId.parse("spiffe://example.org/workload/web")
UNIQUE_ID = "2.5.4.45"
TEST_EXTENSION = Extension("1.3.6.1.4.1.99999.1", critical=False, value=b"\x0c\x05hello")
POLICY = "1.3.6.1.4.1.99999.2"


class ShapingComposer:
    """Adds what it was given to every template it sees, and records each call."""

    def __init__(
        self,
        *,
        subject: tuple[SubjectAttribute, ...] = (),
        dns_names: tuple[str, ...] = (),
        extensions: tuple[Extension, ...] = (),
        ttl: timedelta | None = None,
        claims: dict[str, Any] | None = None,
        raises: Exception | None = None,
    ) -> None:
        self.subject = subject
        self.dns_names = dns_names
        self.extensions = extensions
        self.ttl = ttl
        self.claims = claims or {}
        self.raises = raises
        self.calls: list[tuple[str, object]] = []

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    def _svid(self, method: str, template: X509SvidTemplate) -> X509SvidTemplate:
        self.calls.append((method, template))
        if self.raises is not None:
            raise self.raises
        return replace(
            template,
            subject=template.subject + self.subject,
            dns_names=template.dns_names + self.dns_names,
            extra_extensions=template.extra_extensions + self.extensions,
            ttl=self.ttl or template.ttl,
        )

    async def compose_server_x509_ca(self, template: X509CaTemplate) -> X509CaTemplate:
        self.calls.append(("ca", template))
        return replace(
            template,
            subject=template.subject + self.subject,
            extra_extensions=template.extra_extensions + self.extensions,
            policy_identifiers=(POLICY,),
            ttl=self.ttl or template.ttl,
        )

    async def compose_server_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return self._svid("server", template)

    async def compose_agent_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return self._svid("agent", template)

    async def compose_workload_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return self._svid("workload", template)

    async def compose_workload_jwt_svid(
        self, spiffe_id: SpiffeId, claims: JwtSvidClaims
    ) -> JwtSvidClaims:
        self.calls.append(("jwt", claims))
        return claims.with_claims(self.claims)


def chain(*composers: object) -> CredentialComposition:
    named: list[NamedPlugin[CredentialComposer]] = [
        NamedPlugin(f"c{index}", composer)  # type: ignore[arg-type]
        for index, composer in enumerate(composers)
    ]
    return CredentialComposition(named)


def test_a_composed_subject_is_encoded_as_cryptography_encodes_it() -> None:
    attributes = (
        SubjectAttribute("2.5.4.6", "DE"),
        SubjectAttribute("2.5.4.10", "Acme Ünïcode"),
        SubjectAttribute("2.5.4.11", "payments"),
        SubjectAttribute("2.5.4.5", "42-A"),
        SubjectAttribute("1.2.840.113549.1.9.1", "ops@example.org"),
        SubjectAttribute("0.9.2342.19200300.100.1.25", "example"),
        SubjectAttribute(UNIQUE_ID, "c3406f9b12ceb4f9c948318c579b905b"),
        SubjectAttribute("1.3.6.1.4.1.99999.3", "private"),
        SubjectAttribute("2.5.4.3", "web"),
    )
    reference = x509.Name(
        [x509.NameAttribute(x509.ObjectIdentifier(a.oid), a.value) for a in attributes]
    )
    assert encode_name(attributes) == reference.public_bytes()


@pytest.mark.parametrize(
    ("attribute", "reason"),
    [
        (SubjectAttribute("2.5.4.6", "Ü!"), "PrintableString"),
        (SubjectAttribute("1.2.840.113549.1.9.1", "ö@example.org"), "not ASCII"),
    ],
)
def test_a_string_its_type_cannot_carry_is_refused_by_name(
    attribute: SubjectAttribute, reason: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=rf"{attribute.oid}.*{reason}"):
        encode_name((attribute,))


def test_the_first_dns_name_becomes_the_common_name_only_when_there_is_none() -> None:
    named = (*DEFAULT_SVID_SUBJECT, SubjectAttribute("2.5.4.3", "chosen"))
    assert leaf_subject(named, ("web.example.org",)) == encode_name(named)
    assert leaf_subject(DEFAULT_SVID_SUBJECT, ("web.example.org",)) == encode_name(
        (*DEFAULT_SVID_SUBJECT, SubjectAttribute("2.5.4.3", "web.example.org"))
    )


async def test_without_composers_the_leaf_is_the_plain_request() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    request = await CredentialComposition().leaf(
        SvidKind.WORKLOAD, WORKLOAD, key, ttl=timedelta(hours=1), dns_names=["a.example.org"]
    )
    assert request == LeafRequest(WORKLOAD, key, timedelta(hours=1), ("a.example.org",))
    assert request.subject is DEFAULT_SVID_SUBJECT  # the cached names of the fast path
    assert not CredentialComposition().active


async def test_a_composed_leaf_carries_subject_names_extensions_and_ttl(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=24))
    first = ShapingComposer(
        subject=(SubjectAttribute(UNIQUE_ID, "c3406f9b12ceb4f9c948318c579b905b"),),
        dns_names=("web.example.org",),
    )
    second = ShapingComposer(extensions=(TEST_EXTENSION,), ttl=timedelta(minutes=7))
    public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    request = await chain(first, second).leaf(
        SvidKind.WORKLOAD, WORKLOAD, public_key, ttl=timedelta(hours=1)
    )
    minted = await mint_leaf(ca, request, now=fake_clock.now())
    leaf = x509.load_der_x509_certificate(minted.chain[0])
    leaf.verify_directly_issued_by(ca.certificate)

    # The second composer saw the first one's output, and its own additions came last.
    [(method, seen)] = second.calls
    assert method == "workload"
    assert isinstance(seen, X509SvidTemplate) and seen.dns_names == ("web.example.org",)

    unique = leaf.subject.get_attributes_for_oid(x509.ObjectIdentifier(UNIQUE_ID))
    assert [attribute.value for attribute in unique] == ["c3406f9b12ceb4f9c948318c579b905b"]
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "SPIRE"
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web.example.org"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(WORKLOAD)]
    assert san.get_values_for_type(x509.DNSName) == ["web.example.org"]
    extra = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(TEST_EXTENSION.oid))
    assert extra.critical is False
    assert extra.value.value == TEST_EXTENSION.value  # type: ignore[attr-defined]
    assert leaf.not_valid_after_utc == fake_clock.now() + timedelta(minutes=7)

    reference = svid_builder(
        spiffe_id=WORKLOAD,
        public_key=public_key,
        issuer=ca.certificate,
        now=fake_clock.now(),
        ttl=timedelta(minutes=7),
        dns_names=("web.example.org",),
        subject=x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"),
                x509.NameAttribute(
                    x509.ObjectIdentifier(UNIQUE_ID), "c3406f9b12ceb4f9c948318c579b905b"
                ),
                x509.NameAttribute(NameOID.COMMON_NAME, "web.example.org"),
            ]
        ),
        serial=leaf.serial_number,
        extra_extensions=[
            (
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier(TEST_EXTENSION.oid), TEST_EXTENSION.value
                ),
                False,
            )
        ],
    ).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    assert leaf.tbs_certificate_bytes == reference.tbs_certificate_bytes


@pytest.mark.parametrize(
    ("kind", "method"),
    [(SvidKind.SERVER, "server"), (SvidKind.AGENT, "agent"), (SvidKind.WORKLOAD, "workload")],
)
async def test_each_kind_of_svid_asks_its_own_method(kind: SvidKind, method: str) -> None:
    composer = ShapingComposer()
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    await chain(composer).leaf(kind, WORKLOAD, key, ttl=timedelta(hours=1))
    [(called, template)] = composer.calls
    assert called == method
    assert template == X509SvidTemplate(subject=DEFAULT_SVID_SUBJECT, ttl=timedelta(hours=1))


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (InvalidArgumentError("no such tenant"), InvalidArgumentError, "refused: no such tenant"),
        (UnavailableError("directory down"), UnavailableError, "is unavailable: directory down"),
        (KeyError("tenant"), PluginError, "failed: KeyError"),
    ],
)
async def test_a_failing_composer_is_named_in_the_error(
    raised: Exception, expected: type[Exception], message: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(expected, match=rf'credential composer "c1" {message}'):
        await chain(ShapingComposer(), ShapingComposer(raises=raised)).leaf(
            SvidKind.AGENT, WORKLOAD, key, ttl=timedelta(hours=1)
        )


async def test_a_composer_returning_another_type_is_named() -> None:
    class Wrong(ShapingComposer):
        async def compose_workload_jwt_svid(  # type: ignore[override]
            self, spiffe_id: SpiffeId, claims: JwtSvidClaims
        ) -> dict[str, str]:
            return {"a": "b"}

    with pytest.raises(PluginError, match=r'credential composer "c0" #0 \(NamedPlugin\)'):
        await chain(Wrong()).jwt_claims(WORKLOAD, JwtSvidClaims())


async def test_the_ca_certificate_carries_the_composed_template(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    composer = ShapingComposer(
        subject=(SubjectAttribute("2.5.4.11", "issuing"),),
        extensions=(TEST_EXTENSION,),
        ttl=timedelta(hours=6),
    )
    manager = CaManager(
        CaSettings(trust_domain=TD, ca_ttl=timedelta(hours=24), ca_subject=CaSubject()),
        key_manager=key_manager,
        store=ca_store,
        clock=fake_clock,
        composition=chain(composer),
    )
    await manager.start()
    certificate = manager.x509_ca.certificate
    assert composer.calls[0] == ("ca", CaSubject().ca_template(timedelta(hours=24)))
    assert certificate.subject.rfc4514_string() == "OU=issuing,O=SPIFFE,C=US"
    assert certificate.not_valid_after_utc == fake_clock.now() + timedelta(hours=6)
    policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [policy.policy_identifier.dotted_string for policy in policies] == [POLICY]
    extra = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(TEST_EXTENSION.oid))
    assert extra.value.value == TEST_EXTENSION.value  # type: ignore[attr-defined]
    certificate.verify_directly_issued_by(certificate)
    # What the CA signs still chains to it.
    leaf = await mint_leaf(
        manager.x509_ca,
        LeafRequest(WORKLOAD, ec.generate_private_key(ec.SECP256R1()).public_key(), timedelta(1)),
        now=fake_clock.now(),
    )
    x509.load_der_x509_certificate(leaf.chain[0]).verify_directly_issued_by(certificate)


async def test_the_upstream_csr_carries_the_composed_template(
    key_manager: InProcessKeyManager, ca_store: MemoryCaStore, fake_clock: FakeClock
) -> None:
    upstream = RootUpstream()
    composer = ShapingComposer(extensions=(TEST_EXTENSION,), ttl=timedelta(hours=3))
    manager = CaManager(
        CaSettings(trust_domain=TD),
        key_manager=key_manager,
        store=ca_store,
        clock=fake_clock,
        upstream=upstream,
        composition=chain(composer),
    )
    await manager.start()
    [(csr, preferred_ttl)] = upstream.requests
    assert preferred_ttl == timedelta(hours=3)
    policies = csr.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [policy.policy_identifier.dotted_string for policy in policies] == [POLICY]
    assert csr.extensions.get_extension_for_oid(x509.ObjectIdentifier(TEST_EXTENSION.oid))


def test_policies_given_twice_are_refused() -> None:
    template = X509CaTemplate(
        subject=CaSubject().attributes(),
        ttl=timedelta(hours=1),
        policy_identifiers=(POLICY,),
        extra_extensions=(Extension("2.5.29.32", critical=False, value=b"\x30\x00"),),
    )
    with pytest.raises(InvalidArgumentError, match=r"2\.5\.29\.32 repeats the certificate"):
        ca_csr_builder(trust_domain=TD, template=template)


def test_an_empty_ca_subject_still_names_the_ca() -> None:
    subject = CaSubject(country=(), organization=())
    assert subject.to_name().rfc4514_string() == "O=SPIFFE"
    assert subject.to_name().public_bytes() == encode_name(subject.attributes())
