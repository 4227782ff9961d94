"""What the server learns from an agent's certificates: whether they chain to a trusted CA, and
the facts the agent ID and selectors are made of.

The chain is verified with ``cryptography``'s X.509 path validation: signatures, validity at
the server's clock, basic constraints, path length and name constraints, and the RFC 5280 rules
for CA certificates (``keyUsage`` with keyCertSign). Any extended key usage, and no SAN at all,
is fine on the agent's own certificate, as in SPIRE; its key usage must allow digital
signatures, since it signs the challenge.
"""

from __future__ import annotations

__all__ = [
    "IpAddress",
    "Presented",
    "Verified",
    "common_name",
    "fingerprint",
    "ip_addresses",
    "parse_chain",
    "san_selectors",
    "serial_number_hex",
    "spiffe_path",
    "trust_store",
    "verify_chain",
]

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from pyspire_nodeattestor_x509pop.protocol import PublicKey
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SAN_SCHEME = "x509pop"

# The agent's own certificate: anything goes but what path validation itself requires. CA
# certificates: the Web PKI's (RFC 5280) rules, so a certificate that is no CA cannot sign.
_POLICIES = {
    "ca_policy": verification.ExtensionPolicy.webpki_defaults_ca(),
    "ee_policy": verification.ExtensionPolicy.permit_all(),
}


def fingerprint(certificate: x509.Certificate | bytes) -> str:
    """SHA-1 of the DER certificate, lower-case hex: SPIRE's x509pop fingerprint."""
    der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(Encoding.DER)
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


def serial_number_hex(serial: int) -> str:
    """The serial number in lower-case hex with an even number of digits, as SPIRE shows it."""
    text = f"{serial:x}"
    return text if len(text) % 2 == 0 else "0" + text


@dataclass(frozen=True)
class Presented:
    """The certificates an agent sent, parsed: its own and the intermediates."""

    leaf: x509.Certificate
    leaf_der: bytes
    intermediates: tuple[x509.Certificate, ...]

    @property
    def public_key(self) -> PublicKey:
        key = self.leaf.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise PermissionDeniedError(
                f"the certificate's {type(key).__name__} key cannot answer an x509pop "
                "challenge: RSA and ECDSA keys can"
            )
        return key


def parse_chain(
    certificates: Sequence[bytes], *, max_intermediates: int, max_rsa_key_size: int
) -> Presented:
    """Parse the payload's certificates (leaf first) within the configured limits; the count
    is checked before anything is parsed. InvalidArgumentError names the certificate."""
    if len(certificates) - 1 > max_intermediates:
        raise InvalidArgumentError(
            f"too many intermediate certificates: {len(certificates) - 1}, at most "
            f"{max_intermediates} (max_intermediates)"
        )
    parsed = []
    for index, der in enumerate(certificates):
        what = "the agent's certificate" if index == 0 else f"intermediate certificate {index}"
        try:
            certificate = x509.load_der_x509_certificate(der)
            key = certificate.public_key()
        except ValueError as error:
            raise InvalidArgumentError(
                f"payload.certificates[{index}] ({what}) does not parse: {error}"
            ) from None
        if isinstance(key, rsa.RSAPublicKey) and key.key_size > max_rsa_key_size:
            raise InvalidArgumentError(
                f"payload.certificates[{index}] ({what}) has a {key.key_size}-bit RSA key, more "
                f"than {max_rsa_key_size} (max_rsa_key_size)"
            )
        parsed.append(certificate)
    return Presented(leaf=parsed[0], leaf_der=certificates[0], intermediates=tuple(parsed[1:]))


def trust_store(authorities: Iterable[x509.Certificate]) -> verification.Store:
    """A trust store of ``authorities``; InvalidArgumentError when there is none."""
    roots = list(authorities)
    if not roots:
        raise InvalidArgumentError("no CA certificate to trust")
    return verification.Store(roots)


@dataclass(frozen=True)
class Verified:
    """A chain that verified: the agent's certificate up to a trusted CA, leaf first."""

    chain: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


def verify_chain(presented: Presented, store: verification.Store, now: datetime) -> Verified:
    """Verify ``presented`` against ``store`` at ``now`` and check the agent's certificate may
    sign; PermissionDeniedError with the reason otherwise. CPU work, worth a thread."""
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(now)
        .extension_policies(**_POLICIES)
        .build_client_verifier()
    )
    for index, certificate in enumerate((presented.leaf, *presented.intermediates)):
        what = "the agent's certificate" if index == 0 else f"intermediate certificate {index}"
        if now < certificate.not_valid_before_utc:
            raise PermissionDeniedError(
                f"certificate verification failed: {what} is not valid before "
                f"{certificate.not_valid_before_utc.isoformat()}"
            )
        if now > certificate.not_valid_after_utc:
            raise PermissionDeniedError(
                f"certificate verification failed: {what} expired at "
                f"{certificate.not_valid_after_utc.isoformat()}"
            )
    try:
        verified = verifier.verify(presented.leaf, list(presented.intermediates))
    except verification.VerificationError as error:
        raise PermissionDeniedError(f"certificate verification failed: {_reason(error)}") from None
    try:
        usage = presented.leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        may_sign = usage.digital_signature
    except x509.ExtensionNotFound:
        may_sign = False
    if not may_sign:
        raise PermissionDeniedError(
            "the agent's certificate is not meant for digital signatures: its key usage lacks "
            "digitalSignature"
        )
    return Verified(chain=tuple(verified.chain))


def _reason(error: verification.VerificationError) -> str:
    """``cryptography``'s message without the certificate's repr, in words for operators."""
    text = str(error).split(" (encountered processing", 1)[0].removeprefix("validation failed: ")
    if "candidates exhausted" in text and "no interior errors" in text:
        return "it does not chain to a trusted CA"
    return text


def _uris(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return names.value.get_values_for_type(x509.UniformResourceIdentifier)


def ip_addresses(certificate: x509.Certificate) -> list[IpAddress]:
    """The certificate's IP SANs."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [
        address
        for address in names.value.get_values_for_type(x509.IPAddress)
        if isinstance(address, IpAddress)
    ]


def spiffe_path(certificate: x509.Certificate) -> str | None:
    """The path of the certificate's first ``spiffe://`` URI SAN, or None."""
    for uri in _uris(certificate):
        if uri.startswith("spiffe://"):
            rest = uri[len("spiffe://") :]
            slash = rest.find("/")
            return rest[slash:] if slash >= 0 else ""
    return None


def san_selectors(certificate: x509.Certificate, trust_domain: str) -> dict[str, str]:
    """SPIRE's x509pop SAN facts: ``x509pop://<trust domain>/<key>/<value>`` URI SANs as
    ``{key: value}`` (the value may hold further ``/``); URIs of another shape are left out."""
    prefix = f"{_SAN_SCHEME}://{trust_domain}/"
    found: dict[str, str] = {}
    for uri in _uris(certificate):
        if not uri.startswith(prefix):
            continue
        key, slash, value = uri[len(prefix) :].strip("/").partition("/")
        if slash and key and value:
            found[key] = value
    return found


def common_name(certificate: x509.Certificate) -> str:
    """The subject's first common name, or ``""``."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return ""
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
