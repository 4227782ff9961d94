"""The DER primitives the server's CA and the agent both encode and read X.509 with.

A signed structure (certificate, CSR) is ``SEQUENCE { toBeSigned, signatureAlgorithm,
signatureValue BIT STRING }``. The CA splits one made by ``cryptography`` into its parts and
joins the same TBS and algorithm with a signature from elsewhere (a key manager, possibly a KMS);
the server encodes SVID leaves and the agent its CSRs from the elements here. One home for each
encoding, so the server's leaves and the agent's requests cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from pyspire_sdk.plugins.key_manager import KeyType

SEQUENCE_TAG = 0x30
BIT_STRING_TAG = 0x03
_OCTET_STRING_TAG = 0x04
_OID_TAG = 0x06
_URI_NAME_TAG = 0x86
"""A GeneralName's uniformResourceIdentifier ([6] IMPLICIT IA5String)."""
_DNS_NAME_TAG = 0x82
"""A GeneralName's dNSName ([2] IMPLICIT IA5String)."""
_SUBJECT_ALT_NAME_OID = "2.5.29.17"
_BOOLEAN_TRUE = b"\x01\x01\xff"


def _encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_tlv(tag: int, value: bytes) -> bytes:
    """One DER element: tag, definite length, value."""
    length = len(value)
    # The common short and medium lengths skip the general encoder: this runs several times
    # for every certificate the server signs.
    if length < 0x80:
        return bytes((tag, length)) + value
    if length < 0x100:
        return bytes((tag, 0x81, length)) + value
    if length < 0x10000:
        return bytes((tag, 0x82, length >> 8, length & 0xFF)) + value
    return bytes((tag,)) + _encode_length(length) + value


def read_tlv(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Read the element at ``offset``: returns (tag, value start, value end). Strict DER only."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER element")
    tag = data[offset]
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or position + count > len(data):
            raise ValueError("unsupported or truncated DER length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + length
    if end > len(data):
        raise ValueError("DER element runs past the end of its data")
    return tag, position, end


def split_signed(der: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a signed structure (certificate or CSR) into (to-be-signed, algorithm, signature).

    The first two are returned as whole DER elements (tag and length included) so they can be
    reused verbatim; the signature is the BIT STRING's content without the unused-bits octet.
    """
    tag, start, end = read_tlv(der)
    if tag != SEQUENCE_TAG or end != len(der):
        raise ValueError("not a DER signed structure")
    _, tbs_start, tbs_end = read_tlv(der, start)
    tbs = der[start:tbs_end]
    _, alg_start, alg_end = read_tlv(der, tbs_end)
    algorithm = der[tbs_end:alg_end]
    sig_tag, sig_start, sig_end = read_tlv(der, alg_end)
    if sig_tag != BIT_STRING_TAG or sig_end != end or tbs_start <= start or alg_start <= tbs_end:
        raise ValueError("not a DER signed structure")
    return tbs, algorithm, der[sig_start + 1 : sig_end]


def join_signed(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    """Assemble ``SEQUENCE { tbs, algorithm, BIT STRING signature }`` from DER parts."""
    bit_string = encode_tlv(BIT_STRING_TAG, b"\x00" + signature)
    return encode_tlv(SEQUENCE_TAG, tbs + algorithm + bit_string)


def elements(data: bytes) -> list[bytes]:
    """The whole DER elements (tag and length included) inside a constructed value."""
    found = []
    offset = 0
    while offset < len(data):
        _, _, end = read_tlv(data, offset)
        found.append(data[offset:end])
        offset = end
    return found


def replace_csr_public_key(request_info: bytes, subject_public_key_info: bytes) -> bytes:
    """Put another SubjectPublicKeyInfo into a CertificationRequestInfo (PKCS#10).

    ``CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, attributes [0] }``
    """
    tag, start, end = read_tlv(request_info)
    if tag != SEQUENCE_TAG:
        raise ValueError("not a DER CertificationRequestInfo")
    parts = elements(request_info[start:end])
    if len(parts) != 4:
        raise ValueError("not a DER CertificationRequestInfo")
    parts[2] = subject_public_key_info
    return encode_tlv(SEQUENCE_TAG, b"".join(parts))


@lru_cache(maxsize=512)
def encode_oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER element (a server encodes the same few again and again, so the
    last few hundred are kept)."""
    numbers = [int(part) for part in dotted.split(".")]
    body = bytearray([numbers[0] * 40 + numbers[1]])
    for number in numbers[2:]:
        chunk = [number & 0x7F]
        number >>= 7
        while number:
            chunk.append(0x80 | (number & 0x7F))
            number >>= 7
        body.extend(reversed(chunk))
    return encode_tlv(_OID_TAG, bytes(body))


def sequence(*parts: bytes) -> bytes:
    """A SEQUENCE of the given DER elements, in order."""
    return encode_tlv(SEQUENCE_TAG, b"".join(parts))


def extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    """An X.509 Extension element: ``SEQUENCE { extnID, critical DEFAULT FALSE, extnValue }``
    (``value`` is the DER of the extension's value; FALSE is left out, as DER requires)."""
    return sequence(
        encode_oid(oid), _BOOLEAN_TRUE if critical else b"", encode_tlv(_OCTET_STRING_TAG, value)
    )


def spiffe_san_extension(spiffe_id: str, dns_names: Sequence[str] = ()) -> bytes:
    """The subjectAltName Extension element of an X509-SVID, or of a CSR for one: the SPIFFE ID
    as a URI, then the DNS names; not critical."""
    names = encode_tlv(_URI_NAME_TAG, spiffe_id.encode("ascii")) + b"".join(
        encode_tlv(_DNS_NAME_TAG, name.encode("ascii")) for name in dns_names
    )
    return extension(_SUBJECT_ALT_NAME_OID, sequence(names))


def signature_algorithm_der(key_type: KeyType) -> bytes:
    """The DER AlgorithmIdentifier for signatures of ``key_type`` with its hash: ECDSA ones have
    no parameters, RSA PKCS#1 v1.5 ones an explicit NULL (RFC 5758, RFC 4055)."""
    oid = encode_oid(key_type.x509_signature_algorithm_oid)
    parameters = b"\x05\x00" if key_type.is_rsa else b""
    return encode_tlv(SEQUENCE_TAG, oid + parameters)
