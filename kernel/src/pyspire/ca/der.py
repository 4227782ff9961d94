"""The few DER operations needed to put a remotely made signature into a certificate.

A certificate is ``SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }``.
We split a certificate made by ``cryptography`` into its parts and join the same TBS and algorithm
with a signature from elsewhere (a key manager, possibly a KMS).
"""

from __future__ import annotations

SEQUENCE_TAG = 0x30
BIT_STRING_TAG = 0x03


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
