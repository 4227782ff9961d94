"""A small, real PKI for tests: a self-signed CA per trust domain that issues X509-SVIDs.

Everything here produces genuine certificates and keys (ECDSA P-256, SHA-256), so code under test
can parse, verify and serve them exactly as it would production material::

    from pyspire_sdk.testing.pki import TestAuthority, jwt_authority

    ca = TestAuthority(TrustDomain("example.org"))
    svid = ca.issue(SpiffeId.parse("spiffe://example.org/workload"))
    bundle = ca.bundle(jwt_authorities=(jwt_authority(jwt_key, "kid-1"),))

Leaves are shaped like the X509-SVIDs SPIRE issues (X509-SVID specification, section 4): exactly
one URI SAN holding the SPIFFE ID, ``basicConstraints`` CA=false (critical), ``keyUsage``
digitalSignature, keyEncipherment and keyAgreement (critical) and the serverAuth and clientAuth
extended key usages. The CA carries its trust domain's ID as its URI SAN, ``basicConstraints``
CA=true and ``keyUsage`` keyCertSign and cRLSign.

This module is test material: keys are generated in memory and never protected.
"""

from __future__ import annotations

__all__ = ["TestAuthority", "jwt_authority", "spki_der"]

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.clock import utc
from pyspire_sdk.model import X509Svid
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

CA_BACKDATE = timedelta(hours=1)
"""How far before its creation a :class:`TestAuthority` becomes valid (tolerates clock skew)."""

SVID_BACKDATE = timedelta(minutes=1)
"""How far before its issuance an X509-SVID leaf becomes valid (tolerates clock skew)."""


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _whole_seconds(moment: datetime | None) -> datetime:
    """``moment`` (the wall clock when ``None``) in UTC, truncated to what X.509 can encode."""
    return utc(moment if moment is not None else datetime.now(UTC)).replace(microsecond=0)


def spki_der(private_key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of ``private_key``'s public half.

    This is the encoding :class:`~pyspire_sdk.bundle.JwtAuthority` stores its public key in.
    """
    der: bytes = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def jwt_authority(
    private_key: CertificateIssuerPrivateKeyTypes,
    key_id: str,
    *,
    expires_at: datetime | None = None,
) -> JwtAuthority:
    """The bundle entry that verifies JWTs signed by ``private_key`` under ``key_id``."""
    return JwtAuthority(key_id=key_id, public_key=spki_der(private_key), expires_at=expires_at)


class TestAuthority:
    """A self-signed X.509 CA of one trust domain that issues X509-SVIDs.

    Each instance has its own fresh key, so two authorities never verify each other's leaves,
    even for the same trust domain. The CA's subject names the trust domain, so CAs of different
    trust domains never share an issuer name.
    """

    __test__ = False  # a helper, not a test class, although its name starts with "Test"

    def __init__(
        self,
        trust_domain: TrustDomain,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        now: datetime | None = None,
        ttl: timedelta = timedelta(days=365),
    ) -> None:
        """Create the CA certificate, valid from ``now - CA_BACKDATE`` until ``now + ttl``.

        ``now`` defaults to the wall clock; ``key`` defaults to a fresh P-256 key.
        """
        if ttl <= timedelta(0):
            raise ValueError(f"ttl: must be positive, got {ttl}")
        self.trust_domain = trust_domain
        self.key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        start = _whole_seconds(now)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
                x509.NameAttribute(NameOID.COMMON_NAME, trust_domain.name),
            ]
        )
        public_key = self.key.public_key()
        self.certificate: x509.Certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - CA_BACKDATE)
            .not_valid_after(start + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def der(self) -> bytes:
        """The CA certificate, DER encoded."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def x509_authority(self) -> X509Authority:
        """The CA as a bundle's X.509 authority."""
        return X509Authority(self.der)

    def issue(
        self,
        spiffe_id: SpiffeId,
        *,
        hint: str = "",
        now: datetime | None = None,
        ttl: timedelta = timedelta(hours=1),
    ) -> X509Svid:
        """An X509-SVID for ``spiffe_id`` signed by this CA, with its fresh P-256 key.

        ``cert_chain`` holds just the leaf (DER) since the CA is a root; ``private_key`` is the
        leaf key as unencrypted PKCS#8 DER. The leaf is valid from ``now - SVID_BACKDATE`` until
        ``now + ttl`` (whole seconds, capped at the CA's own expiry) and ``expires_at`` equals its
        ``notAfter`` exactly. Raises :class:`ValueError` when ``spiffe_id`` is not in this CA's
        trust domain, ``ttl`` is not positive or ``now`` is outside the CA's validity.
        """
        if not spiffe_id.is_member_of(self.trust_domain):
            raise ValueError(
                f"spiffe_id: {spiffe_id} is not in trust domain {self.trust_domain.name}"
            )
        if ttl <= timedelta(0):
            raise ValueError(f"ttl: must be positive, got {ttl}")
        start = _whole_seconds(now)
        ca_from = self.certificate.not_valid_before_utc
        ca_until = self.certificate.not_valid_after_utc
        if not ca_from <= start < ca_until:
            raise ValueError(
                f"now: {start.isoformat()} is outside the CA's validity "
                f"({ca_from.isoformat()} to {ca_until.isoformat()})"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        not_after = min(start + ttl, ca_until)
        not_before = max(start - SVID_BACKDATE, ca_from)
        issuer_key_id = self.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_encipherment=True, key_agreement=True),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key_id),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return X509Svid(
            spiffe_id=spiffe_id,
            cert_chain=(certificate.public_bytes(serialization.Encoding.DER),),
            expires_at=not_after,
            private_key=key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            hint=hint,
        )

    @property
    def pem(self) -> bytes:
        """The CA certificate, PEM encoded (a trust-store file for TLS clients)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue_tls_server(
        self,
        hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        *,
        ttl: timedelta = timedelta(days=1),
    ) -> tuple[bytes, bytes]:
        """A TLS server certificate for ``hosts`` (DNS names or IP addresses) signed by this CA,
        and its fresh P-256 key: ``(certificate PEM, unencrypted PKCS#8 key PEM)``.

        For HTTPS test servers that clients verify with :attr:`pem` as their trust store.
        """
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        key = ec.generate_private_key(ec.SECP256R1())
        start = _whole_seconds(None)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - SVID_BACKDATE)
            .not_valid_after(min(start + ttl, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return (
            certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    def bundle(
        self,
        *,
        extra_x509_authorities: Sequence[X509Authority] = (),
        jwt_authorities: Sequence[JwtAuthority] = (),
        sequence_number: int = 1,
    ) -> Bundle:
        """The trust domain's bundle: this CA first, then ``extra_x509_authorities``."""
        return Bundle(
            trust_domain=self.trust_domain,
            x509_authorities=(self.x509_authority, *extra_x509_authorities),
            jwt_authorities=tuple(jwt_authorities),
            sequence_number=sequence_number,
        )
