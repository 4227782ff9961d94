"""What our certificates contain, per the X509-SVID standard and what real clients require.

CA certificates are built here with ``cryptography``; SVID leaves, the hot path, are encoded
directly by :mod:`pyspire.ca.svid_der` with the contents described below.

CA certificates: non-empty subject, critical basicConstraints CA=true, critical keyUsage
keyCertSign|cRLSign, SKI, AKI, URI SAN ``spiffe://<td>``. Leaves (X509-SVIDs): exactly one URI SAN,
critical basicConstraints CA=false (py-spiffe refuses a leaf without it), critical keyUsage
digitalSignature|keyEncipherment|keyAgreement, EKU serverAuth+clientAuth, SKI, AKI, subject
``O=SPIRE, C=US`` with the first DNS name as CN, random positive 128-bit serial. notBefore is
backdated 10 s for clock skew; notAfter never passes the issuer's.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue
from pyspire_sdk.spiffeid import TrustDomain

BACKDATE = timedelta(seconds=10)


@dataclass(frozen=True, kw_only=True)
class CaSubject:
    """The subject of the server's X.509 CA certificates (``ca_subject`` in the server
    configuration): one declaration for the configuration file and the CA."""

    country: tuple[str, ...] = setting(
        default=("US",), description="Country (C) attributes of the CA subject."
    )
    organization: tuple[str, ...] = setting(
        default=("SPIFFE",), description="Organization (O) attributes of the CA subject."
    )
    common_name: str = setting(
        default="", description="Common name (CN) of the CA subject; empty leaves it out."
    )

    def validate(self) -> Iterator[ConfigIssue]:
        for index, country in enumerate(self.country):
            if len(country) != 2 or not country.isascii() or not country.isalpha():
                yield ConfigIssue(
                    f"country[{index}]", f"expected a two-letter country code, found {country!r}"
                )
        for index, organization in enumerate(self.organization):
            if not organization:
                yield ConfigIssue(f"organization[{index}]", "must not be empty")

    def to_name(self) -> x509.Name:
        attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, c) for c in self.country]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in self.organization]
        if self.common_name:
            attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, self.common_name))
        if not attributes:
            # An empty issuer name breaks strict verifiers (OpenSSL's X509_STRICT).
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"))
        return x509.Name(attributes)


def random_serial() -> int:
    """A random positive serial number of up to 128 bits."""
    return secrets.randbits(128) or 1


def ca_builder(
    *,
    trust_domain: TrustDomain,
    subject: CaSubject,
    public_key: CertificatePublicKeyTypes,
    now: datetime,
    ttl: timedelta,
) -> x509.CertificateBuilder:
    """A self-signed root CA certificate for ``trust_domain``, valid ``ttl`` from ``now``."""
    name = subject.to_name()
    key_id = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(key_id, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
            critical=False,
        )
    )


def ca_csr_builder(
    *, trust_domain: TrustDomain, subject: CaSubject
) -> x509.CertificateSigningRequestBuilder:
    """The CSR an upstream authority signs to make our CA an intermediate."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject.to_name())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
            critical=False,
        )
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def downstream_ca_builder(
    *,
    trust_domain: TrustDomain,
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    issuer: x509.Certificate,
    now: datetime,
    ttl: timedelta,
) -> x509.CertificateBuilder:
    """An intermediate CA certificate for a downstream server of ``trust_domain``."""
    issuer_key_id = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(max(now - BACKDATE, issuer.not_valid_before_utc))
        .not_valid_after(min(now + ttl, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key_id),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
            critical=False,
        )
    )
