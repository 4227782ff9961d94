"""What our certificates contain, per the X509-SVID standard and what real clients require.

CA certificates are built here with ``cryptography``; SVID leaves, the hot path, are encoded
directly by :mod:`pyspire.ca.svid_der` with the contents described below.

CA certificates: non-empty subject, critical basicConstraints CA=true, critical keyUsage
keyCertSign|cRLSign, SKI, AKI, URI SAN ``spiffe://<td>``. Leaves (X509-SVIDs): exactly one URI SAN,
critical basicConstraints CA=false (py-spiffe refuses a leaf without it), critical keyUsage
digitalSignature|keyEncipherment|keyAgreement, EKU serverAuth+clientAuth, SKI, AKI, subject
``O=SPIRE, C=US`` with the first DNS name as CN, random positive 128-bit serial. notBefore is
backdated 10 s for clock skew; notAfter never passes the issuer's.

Credential composers may change a CA's subject and lifetime and add certificate policies and
extensions (:class:`~pyspire_sdk.plugins.credential_composer.X509CaTemplate`), and a leaf's
subject, DNS names, lifetime and extensions; never the parts listed above that make the
certificate a SPIFFE credential.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pyspire.ca.svid_der import COMMON_NAME_OID
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError
from pyspire_sdk.plugins.credential_composer import SubjectAttribute, X509CaTemplate
from pyspire_sdk.spiffeid import TrustDomain

BACKDATE = timedelta(seconds=10)
COUNTRY_OID = "2.5.4.6"
ORGANIZATION_OID = "2.5.4.10"


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

    def attributes(self) -> tuple[SubjectAttribute, ...]:
        """The subject as attributes in order: countries, organizations, the common name."""
        attributes = [SubjectAttribute(COUNTRY_OID, c) for c in self.country]
        attributes += [SubjectAttribute(ORGANIZATION_OID, o) for o in self.organization]
        if self.common_name:
            attributes.append(SubjectAttribute(COMMON_NAME_OID, self.common_name))
        if not attributes:
            # An empty issuer name breaks strict verifiers (OpenSSL's X509_STRICT).
            attributes.append(SubjectAttribute(ORGANIZATION_OID, "SPIFFE"))
        return tuple(attributes)

    def to_name(self) -> x509.Name:
        return name_of(self.attributes())

    def ca_template(self, ttl: timedelta) -> X509CaTemplate:
        """The CA certificate template credential composers start from: this subject, ``ttl``,
        no policies and no extra extensions."""
        return X509CaTemplate(subject=self.attributes(), ttl=ttl)


def name_of(attributes: Sequence[SubjectAttribute]) -> x509.Name:
    """``attributes`` as a ``cryptography`` Name, one relative distinguished name each."""
    try:
        return x509.Name(
            [x509.NameAttribute(x509.ObjectIdentifier(a.oid), a.value) for a in attributes]
        )
    except ValueError as error:
        raise InvalidArgumentError(f"subject: {error}") from None


def random_serial() -> int:
    """A random positive serial number of up to 128 bits."""
    return secrets.randbits(128) or 1


def ca_builder(
    *,
    trust_domain: TrustDomain,
    template: X509CaTemplate,
    public_key: CertificatePublicKeyTypes,
    now: datetime,
) -> x509.CertificateBuilder:
    """A self-signed root CA certificate for ``trust_domain`` as ``template`` describes it,
    valid ``template.ttl`` from ``now``."""
    name = name_of(template.subject)
    key_id = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + template.ttl)
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
    return _with_composed_extensions(builder, template)


def ca_csr_builder(
    *, trust_domain: TrustDomain, template: X509CaTemplate
) -> x509.CertificateSigningRequestBuilder:
    """The CSR an upstream authority signs to make our CA an intermediate."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name_of(template.subject))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
            critical=False,
        )
    )
    return _with_composed_extensions(builder, template)


BuilderT = TypeVar("BuilderT", x509.CertificateBuilder, x509.CertificateSigningRequestBuilder)


CERTIFICATE_POLICIES_OID = "2.5.29.32"


def _with_composed_extensions(builder: BuilderT, template: X509CaTemplate) -> BuilderT:
    """``builder`` with the template's certificate policies and extra extensions."""
    if template.policy_identifiers:
        if any(e.oid == CERTIFICATE_POLICIES_OID for e in template.extra_extensions):
            raise InvalidArgumentError(
                f"extra extension {CERTIFICATE_POLICIES_OID} repeats the certificate policies "
                "made from policy_identifiers"
            )
        policies = x509.CertificatePolicies(
            [
                x509.PolicyInformation(x509.ObjectIdentifier(oid), None)
                for oid in template.policy_identifiers
            ]
        )
        builder = builder.add_extension(policies, critical=False)
    for extension in template.extra_extensions:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(extension.oid), extension.value),
            critical=extension.critical,
        )
    return builder


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
