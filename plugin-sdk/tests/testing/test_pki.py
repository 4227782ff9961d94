"""The test PKI issues real, verifiable X509-SVIDs shaped like SPIRE's, and bundles of its CAs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pyspire_sdk import testing
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import (
    CA_BACKDATE,
    SVID_BACKDATE,
    TestAuthority,
    jwt_authority,
    spki_der,
)

TD = TrustDomain("example.org")
WORKLOAD = SpiffeId.parse("spiffe://example.org/workload")
NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> TestAuthority:
    return TestAuthority(TD)


@pytest.fixture(scope="module")
def ca_at_noon() -> TestAuthority:
    """A CA made at ``NOW``, for exact validity checks."""
    return TestAuthority(TD, now=NOW)


def leaf_of(ca: TestAuthority, **options: object) -> x509.Certificate:
    svid = ca.issue(WORKLOAD, **options)  # type: ignore[arg-type]
    return x509.load_der_x509_certificate(svid.cert_chain[0])


def test_the_kit_exports_the_pki() -> None:
    assert testing.TestAuthority is TestAuthority
    assert testing.jwt_authority is jwt_authority
    assert testing.spki_der is spki_der


def test_pytest_does_not_collect_the_authority_as_a_test_class() -> None:
    assert TestAuthority.__test__ is False


def test_the_ca_is_a_self_signed_root_of_its_trust_domain(ca_at_noon: TestAuthority) -> None:
    certificate = x509.load_der_x509_certificate(ca_at_noon.der)
    assert certificate == ca_at_noon.certificate
    certificate.verify_directly_issued_by(certificate)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    assert certificate.not_valid_before_utc == NOW - CA_BACKDATE
    assert certificate.not_valid_after_utc == NOW + timedelta(days=365)


def test_the_ca_uses_a_given_key_and_lifetime() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    ca = TestAuthority(TD, key=key, now=NOW, ttl=timedelta(days=2))
    assert ca.key is key
    assert spki_der(key) == ca.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ca.certificate.not_valid_after_utc == NOW + timedelta(days=2)


def test_cas_of_different_trust_domains_have_different_subjects() -> None:
    ours = TestAuthority(TD)
    theirs = TestAuthority(TrustDomain("foreign.test"))
    assert ours.certificate.subject != theirs.certificate.subject


def test_an_svid_has_one_uri_san_and_the_leaf_extensions(ca: TestAuthority) -> None:
    leaf = leaf_of(ca)
    leaf.verify_directly_issued_by(ca.certificate)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("spiffe://example.org/workload")]
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_an_svid_carries_its_pkcs8_key_and_hint(ca: TestAuthority) -> None:
    svid = ca.issue(WORKLOAD, hint="db")
    assert svid.spiffe_id == WORKLOAD
    assert svid.hint == "db"
    assert len(svid.cert_chain) == 1
    assert svid.private_key is not None
    key = serialization.load_der_private_key(svid.private_key, password=None)
    leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
    assert key.public_key() == leaf.public_key()


def test_an_svid_expires_exactly_when_its_leaf_does(ca_at_noon: TestAuthority) -> None:
    svid = ca_at_noon.issue(
        WORKLOAD, now=NOW + timedelta(microseconds=700), ttl=timedelta(minutes=5)
    )
    leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
    assert svid.expires_at == leaf.not_valid_after_utc == NOW + timedelta(minutes=5)
    assert leaf.not_valid_before_utc == NOW - SVID_BACKDATE


def test_an_svid_never_outlives_or_predates_its_ca() -> None:
    ca = TestAuthority(TD, now=NOW, ttl=timedelta(minutes=10))
    leaf = leaf_of(ca, now=NOW - CA_BACKDATE, ttl=timedelta(hours=2))
    assert leaf.not_valid_after_utc == ca.certificate.not_valid_after_utc
    assert leaf.not_valid_before_utc == ca.certificate.not_valid_before_utc


def test_every_svid_has_its_own_key(ca: TestAuthority) -> None:
    assert ca.issue(WORKLOAD).private_key != ca.issue(WORKLOAD).private_key


def test_another_authority_does_not_verify_the_leaf(ca: TestAuthority) -> None:
    other = TestAuthority(TD)
    with pytest.raises(InvalidSignature):
        leaf_of(ca).verify_directly_issued_by(other.certificate)


@pytest.mark.parametrize(
    "moment", [NOW - CA_BACKDATE - timedelta(seconds=1), NOW + timedelta(days=365)]
)
def test_an_svid_is_refused_outside_the_cas_validity(
    ca_at_noon: TestAuthority, moment: datetime
) -> None:
    with pytest.raises(ValueError, match=r"now: .* is outside the CA's validity"):
        ca_at_noon.issue(WORKLOAD, now=moment)


def test_an_id_of_another_trust_domain_is_refused(ca: TestAuthority) -> None:
    with pytest.raises(ValueError, match=r"spiffe_id: .* is not in trust domain example\.org"):
        ca.issue(SpiffeId.parse("spiffe://foreign.test/workload"))


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1)])
def test_a_lifetime_must_be_positive(ca: TestAuthority, ttl: timedelta) -> None:
    with pytest.raises(ValueError, match="ttl: must be positive"):
        ca.issue(WORKLOAD, ttl=ttl)
    with pytest.raises(ValueError, match="ttl: must be positive"):
        TestAuthority(TD, ttl=ttl)


def test_the_bundle_holds_the_ca_first_then_the_extras(ca: TestAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    extra = TestAuthority(TD).x509_authority
    expiry = NOW + timedelta(days=1)
    bundle = ca.bundle(
        extra_x509_authorities=(extra,),
        jwt_authorities=(jwt_authority(key, "kid-1", expires_at=expiry),),
        sequence_number=7,
    )
    assert bundle.trust_domain == TD
    assert bundle.x509_authorities == (X509Authority(ca.der), extra)
    assert [a.key_id for a in bundle.jwt_authorities] == ["kid-1"]
    assert bundle.jwt_authorities[0].expires_at == expiry
    assert bundle.sequence_number == 7
    reparsed = Bundle.from_spiffe_json(TD, bundle.to_spiffe_json())
    assert reparsed.x509_authorities == bundle.x509_authorities
    assert reparsed.jwt_authorities[0].public_key == spki_der(key)


def test_the_default_bundle_has_only_the_ca(ca: TestAuthority) -> None:
    assert ca.bundle() == Bundle(TD, (X509Authority(ca.der),), (), 1)


def test_jwt_authority_takes_any_signing_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    authority = jwt_authority(key, "rsa")
    loaded = serialization.load_der_public_key(authority.public_key)
    assert loaded == key.public_key()
    assert authority.expires_at is None
