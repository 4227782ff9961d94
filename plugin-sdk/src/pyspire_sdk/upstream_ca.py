"""An upstream CA whose key this process holds: what key-holding upstream authorities share.

SPIRE's ``disk`` and ``awssecret`` upstream authorities differ only in where the CA's key,
certificates and trust bundle come from (files, or secrets); loading them and signing the
server's CA CSRs is the same code (SPIRE's ``x509svid.UpstreamCA``), kept here once:

- :func:`load_upstream_ca` reads the PEM material with SPIRE's rules: the first certificate is
  the signing CA and must match the key; without a bundle it must be alone and self-signed (it
  is then the root); with a bundle, the bundle's certificates are the roots, the certificates
  (the signing CA first, then its intermediates) must verify against them, and they all follow
  every minted CA in its chain.
- :func:`validate_ca_csr` is SPIRE's CSR check: a valid signature and exactly one URI SAN, the
  trust domain's own ID.
- :meth:`UpstreamCa.mint` signs like SPIRE: the CSR's subject, key, URI SAN and extra
  extensions, ``basicConstraints`` CA:TRUE with no path length, keyCertSign and cRLSign,
  backdated 10 s, valid for the preferred TTL (1 h when none) but never past the signing CA.

Everything here is CPU work without I/O; callers run it in a thread.
"""

from __future__ import annotations

__all__ = [
    "BACKDATE",
    "CA_POLICY",
    "DEFAULT_CA_TTL",
    "EE_POLICY",
    "PemSources",
    "UpstreamCa",
    "load_upstream_ca",
    "validate_ca_csr",
]

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import verification
from cryptography.x509.oid import ExtensionOID

from pyspire_sdk.errors import ConfigError, ConfigIssue, InvalidArgumentError, UnavailableError
from pyspire_sdk.plugins.upstream_authority import UpstreamX509CA
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

BACKDATE = timedelta(seconds=10)
"""How far before the moment of signing a minted CA becomes valid (SPIRE's backdate)."""

DEFAULT_CA_TTL = timedelta(hours=1)
"""The lifetime of a minted CA when the server prefers none (SPIRE's default)."""

_SET_BY_THE_UPSTREAM = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
)
"""Extensions the upstream decides; the CSR's other extensions are copied, as SPIRE does."""

CA_POLICY = verification.ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
)
"""Path validation's rule for the CAs of a chain: only that they are CAs (basicConstraints
CA:TRUE, enforced by the verifier), as Go's verifier asks; the Web PKI's stricter rules would
refuse private PKIs SPIRE accepts."""

EE_POLICY = verification.ExtensionPolicy.permit_all()
"""Path validation's rule for the certificate verified: anything goes."""

_CA_KEY_USAGE = x509.KeyUsage(
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


@dataclass(frozen=True)
class PemSources:
    """What to call the three inputs in error messages: the configuration key naming each,
    with where it points (``key_file_path``, ``/etc/ca/key.pem``)."""

    key_field: str
    key_source: str
    certificates_field: str
    certificates_source: str
    bundle_field: str
    bundle_source: str = ""


def _issue(field: str, source: str, reason: str) -> ConfigError:
    where = f"{source}: " if source else ""
    return ConfigError([ConfigIssue(field, f"{where}{reason}")])


def _load_key(pem: bytes, sources: PemSources) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise _issue(
            sources.key_field,
            sources.key_source,
            f"unable to load the upstream CA key: {_first_line(error)}",
        ) from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise _issue(
            sources.key_field,
            sources.key_source,
            f"a {type(key).__name__} cannot sign certificates here: use an ECDSA, RSA or "
            "Ed25519 key",
        )
    return key


def _load_certificates(pem: bytes, field: str, source: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise _issue(field, source, f"holds no PEM certificate: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _public_der(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    der: bytes = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _check_chain(
    certificates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
    sources: PemSources,
) -> None:
    """The signing CA verifies against ``roots`` through ``certificates`` at ``now``."""
    ca = certificates[0]
    if ca in roots:
        return
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(roots)))
        .time(now)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(ca, list(certificates[1:]))
    except verification.VerificationError as error:
        reason = str(error).split(" (encountered processing", 1)[0]
        raise _issue(
            sources.certificates_field,
            sources.certificates_source,
            f"the upstream CA certificate cannot be validated with the bundle "
            f"({sources.bundle_field}): {reason}",
        ) from None


def _check_self_signed(ca: x509.Certificate, now: datetime, sources: PemSources) -> None:
    try:
        ca.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise _issue(
            sources.certificates_field,
            sources.certificates_source,
            f"the upstream CA certificate is not self-signed: without {sources.bundle_field} "
            "only a self-signed CA is supported",
        ) from None
    if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
        raise _issue(
            sources.certificates_field,
            sources.certificates_source,
            f"the upstream CA certificate is not valid now (valid from "
            f"{ca.not_valid_before_utc.isoformat()} to {ca.not_valid_after_utc.isoformat()})",
        )


def _check_is_ca(ca: x509.Certificate, sources: PemSources) -> None:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise _issue(
            sources.certificates_field,
            sources.certificates_source,
            "the upstream CA certificate is not a CA (basicConstraints CA:TRUE is missing)",
        )


def load_upstream_ca(
    *,
    key_pem: bytes,
    certificates_pem: bytes,
    bundle_pem: bytes | None,
    trust_domain: TrustDomain,
    now: datetime,
    sources: PemSources,
) -> UpstreamCa:
    """The upstream CA the PEM material describes, checked at ``now`` as SPIRE checks it.

    ``bundle_pem`` is None when no bundle is configured. Raises
    :class:`~pyspire_sdk.errors.ConfigError` whose issue names the field (from ``sources``)
    and the reason: a key or certificate that does not parse, a key that is not the
    certificate's, a chain without a bundle, a certificate that does not verify.
    """
    key = _load_key(key_pem, sources)
    certificates = _load_certificates(
        certificates_pem, sources.certificates_field, sources.certificates_source
    )
    ca = certificates[0]
    if _public_der(ca) != _public_der(key):
        raise _issue(
            sources.certificates_field,
            sources.certificates_source,
            f"the upstream CA certificate and the private key ({sources.key_field}) do not match",
        )
    _check_is_ca(ca, sources)
    if bundle_pem is None:
        if len(certificates) != 1:
            raise _issue(
                sources.certificates_field,
                sources.certificates_source,
                f"holds {len(certificates)} certificates: without {sources.bundle_field} only a "
                "single self-signed CA is supported",
            )
        _check_self_signed(ca, now, sources)
        return UpstreamCa(
            certificate=ca, private_key=key, chain=(), roots=(ca,), trust_domain=trust_domain
        )
    roots = _load_certificates(bundle_pem, sources.bundle_field, sources.bundle_source)
    _check_chain(certificates, roots, now, sources)
    return UpstreamCa(
        certificate=ca,
        private_key=key,
        chain=tuple(certificates),
        roots=tuple(roots),
        trust_domain=trust_domain,
    )


def validate_ca_csr(csr_der: bytes, trust_domain: TrustDomain) -> x509.CertificateSigningRequest:
    """The CSR, once it holds: SPIRE's rules for a server CA's CSR.

    :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the reason otherwise: it does not
    parse, its signature does not verify, it has no or several URI SANs, the URI is not a
    SPIFFE ID, or it is not ``spiffe://<trust domain>``.
    """
    try:
        csr = x509.load_der_x509_csr(csr_der)
        signature_valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise InvalidArgumentError(f"csr: unable to parse the CSR: {_first_line(error)}") from None
    if not signature_valid:
        raise InvalidArgumentError("csr: the CSR signature check failed")
    try:
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    except ValueError as error:
        raise InvalidArgumentError(f"csr: unreadable extensions: {_first_line(error)}") from None
    if len(uris) != 1:
        raise InvalidArgumentError(f"csr: the CSR must have exactly one URI SAN, found {len(uris)}")
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except InvalidArgumentError as error:
        raise InvalidArgumentError(
            f"csr: the CSR's URI SAN {uris[0]!r} is not a valid SPIFFE ID: {error}"
        ) from None
    if spiffe_id != trust_domain.id:
        raise InvalidArgumentError(
            f"csr: the CSR's SPIFFE ID {str(spiffe_id)!r} is not the ID of trust domain "
            f"{trust_domain.name!r} ({trust_domain.id})"
        )
    return csr


def _signature_hash(
    key: CertificateIssuerPrivateKeyTypes,
) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None:
    """The hash Go's ``x509`` signs with for ``key``, so certificates match SPIRE's."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size > 384:
            return hashes.SHA512()
        if key.curve.key_size > 256:
            return hashes.SHA384()
        return hashes.SHA256()
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


@dataclass(frozen=True)
class UpstreamCa:
    """A CA certificate with its private key, the certificates that follow what it signs in a
    chain (``chain``, the CA first; empty when the CA is itself the root) and the roots."""

    certificate: x509.Certificate
    private_key: CertificateIssuerPrivateKeyTypes
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    trust_domain: TrustDomain

    def sign_csr(self, csr_der: bytes, preferred_ttl: timedelta, now: datetime) -> x509.Certificate:
        """The server CA certificate for ``csr_der`` (checked by :func:`validate_ca_csr`);
        :class:`~pyspire_sdk.errors.UnavailableError` once the upstream CA has expired."""
        csr = validate_ca_csr(csr_der, self.trust_domain)
        if now >= self.certificate.not_valid_after_utc:
            raise UnavailableError(
                "the upstream CA certificate expired at "
                f"{self.certificate.not_valid_after_utc.isoformat()}: it can sign nothing"
            )
        public_key = csr.public_key()
        ttl = preferred_ttl if preferred_ttl > timedelta(0) else DEFAULT_CA_TTL
        not_after = min(now + ttl, self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(secrets.randbits(128) or 1)
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(_authority_key_identifier(self.certificate), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(str(self.trust_domain.id))]
                ),
                critical=False,
            )
        )
        for extension in csr.extensions:
            if extension.oid not in _SET_BY_THE_UPSTREAM:
                builder = builder.add_extension(extension.value, critical=extension.critical)
        return builder.sign(self.private_key, _signature_hash(self.private_key))

    def mint(self, csr_der: bytes, preferred_ttl: timedelta, now: datetime) -> UpstreamX509CA:
        """:meth:`sign_csr`, answered as an upstream authority answers: the new CA and
        ``chain`` (DER, leaf first) and the roots."""
        certificate = self.sign_csr(csr_der, preferred_ttl, now)
        der = serialization.Encoding.DER
        return UpstreamX509CA(
            ca_chain=tuple(c.public_bytes(der) for c in (certificate, *self.chain)),
            upstream_roots=tuple(c.public_bytes(der) for c in self.roots),
        )
