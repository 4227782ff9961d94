"""The certificate signing requests the agent sends, for workload X509-SVIDs and for its own
SVID, encoded directly.

An agent mints a key and a CSR for every entry it holds, so a storm of agents starting makes
twenty or more per agent. ``cryptography``'s builder assembles each request through several
conversions around the one signature that matters; here the fixed shape of the request is
encoded from :mod:`pyspire.der` and only the signature is computed. The bytes are exactly what
``CertificateSigningRequestBuilder`` makes for the same key and SPIFFE ID (a test compares the
two), so the request stays a PKCS#10 any SPIFFE server and OpenSSL accept.

``CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature }``
and ``CertificationRequestInfo ::= SEQUENCE { version INTEGER (0), subject Name (empty),
subjectPKInfo, attributes [0] { extensionRequest { subjectAltName { URI spiffe_id } } } }``.
The server takes only the key from it; the SPIFFE ID is there for whoever reads one.

The agent's own request (AttestAgent, RenewAgent) is SPIRE's: subject ``O=SPIRE``, no
attributes, signed with the hash of the agent key's type (SHA-384 for P-384, else SHA-256).
"""

from __future__ import annotations

__all__ = ["WorkloadCsr", "agent_csr", "workload_csr"]

from typing import NamedTuple

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from pyspire.der import (
    encode_oid,
    encode_tlv,
    join_signed,
    sequence,
    signature_algorithm_der,
    spiffe_san_extension,
)
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugins.key_manager import KeyType

_CSR_HASH = hashes.SHA256()
"""Workload CSRs are signed with SHA-256 whatever the key type, as they always were."""

_VERSION_1 = b"\x02\x01\x00"
_EMPTY_SUBJECT = sequence()
_EXTENSION_REQUEST_OID = "1.2.840.113549.1.9.14"
_SET_TAG = 0x31
_ATTRIBUTES_TAG = 0xA0
_ECDSA_WITH_SHA256 = signature_algorithm_der(KeyType.EC_P256)
_RSA_WITH_SHA256 = signature_algorithm_der(KeyType.RSA_2048)
_ECDSA_SHA256 = ec.ECDSA(_CSR_HASH)
_PKCS1V15 = padding.PKCS1v15()

_UTF8_STRING_TAG = 0x0C
_ORGANIZATION_OID = "2.5.4.10"
_AGENT_SUBJECT = sequence(
    encode_tlv(
        _SET_TAG, sequence(encode_oid(_ORGANIZATION_OID), encode_tlv(_UTF8_STRING_TAG, b"SPIRE"))
    )
)
"""``O=SPIRE``, the subject of SPIRE's agent CSRs, as ``cryptography`` encodes it."""
_NO_ATTRIBUTES = encode_tlv(_ATTRIBUTES_TAG, b"")
_AGENT_CSR_HASHES: dict[KeyType, hashes.SHA256 | hashes.SHA384] = {
    key_type: hashes.SHA384() if key_type is KeyType.EC_P384 else hashes.SHA256()
    for key_type in KeyType
}


def _request_info(spki: bytes, spiffe_id: str) -> bytes:
    san = spiffe_san_extension(spiffe_id)
    extension_request = sequence(
        encode_oid(_EXTENSION_REQUEST_OID), encode_tlv(_SET_TAG, sequence(san))
    )
    return sequence(
        _VERSION_1, _EMPTY_SUBJECT, spki, encode_tlv(_ATTRIBUTES_TAG, extension_request)
    )


class WorkloadCsr(NamedTuple):
    """A DER CSR and the SubjectPublicKeyInfo DER it carries (what the SVID issued for it must
    carry too)."""

    der: bytes
    public_key_info: bytes


def workload_csr(private_key: CertificateIssuerPrivateKeyTypes, spiffe_id: str) -> WorkloadCsr:
    """The CSR of ``private_key`` (EC or RSA) naming ``spiffe_id`` as its URI SAN, signed with
    SHA-256 (ECDSA, or RSA PKCS#1 v1.5).

    Raises :class:`InvalidArgumentError` for a key of another kind, or a SPIFFE ID that is not
    ASCII (a URI SAN is an IA5String).
    """
    if not spiffe_id.isascii():
        raise InvalidArgumentError(f"spiffe_id {spiffe_id!r} is not ASCII")
    spki = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = _request_info(spki, spiffe_id)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        signature = private_key.sign(info, _ECDSA_SHA256)
        return WorkloadCsr(join_signed(info, _ECDSA_WITH_SHA256, signature), spki)
    if isinstance(private_key, rsa.RSAPrivateKey):
        signature = private_key.sign(info, _PKCS1V15, _CSR_HASH)
        return WorkloadCsr(join_signed(info, _RSA_WITH_SHA256, signature), spki)
    raise InvalidArgumentError(
        f"private_key must be an EC or RSA key, found {type(private_key).__name__}"
    )


def agent_csr(private_key: CertificateIssuerPrivateKeyTypes, key_type: KeyType) -> bytes:
    """The DER CSR for the agent's own SVID: subject ``O=SPIRE`` and ``private_key``'s public
    key, signed with ``key_type``'s hash (ECDSA, or RSA PKCS#1 v1.5), as
    ``CertificateSigningRequestBuilder`` makes it.

    Raises :class:`InvalidArgumentError` when ``private_key`` is not of ``key_type``.
    """
    if key_type.is_rsa != isinstance(private_key, rsa.RSAPrivateKey) or not isinstance(
        private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise InvalidArgumentError(
            f"private_key must be a key of type {key_type.value!r}, "
            f"found {type(private_key).__name__}"
        )
    spki = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = sequence(_VERSION_1, _AGENT_SUBJECT, spki, _NO_ATTRIBUTES)
    algorithm = signature_algorithm_der(key_type)
    digest = _AGENT_CSR_HASHES[key_type]
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return join_signed(info, algorithm, private_key.sign(info, ec.ECDSA(digest)))
    return join_signed(info, algorithm, private_key.sign(info, _PKCS1V15, digest))
