"""Verifying the PKCS #7 (CMS, RFC 5652) signed data AWS signs instance identity documents with.

``cryptography`` builds PKCS #7 signatures but does not verify them, so this module reads the
one shape AWS uses: ``SignedData`` with the document as encapsulated content and one signer
identified by issuer and serial number, RSA PKCS #1 v1.5 over SHA-2, with or without signed
attributes. AWS writes it in BER with indefinite lengths and the content as a constructed
OCTET STRING (OpenSSL's streaming output); DER is read too. The signer's certificate is not
taken from the message: it must be one of the certificates the caller trusts, found by the
signer's issuer and serial number, and its key must verify the signature. What was signed is
returned, for the caller to compare with the document it was handed.
"""

from __future__ import annotations

__all__ = ["SignatureError", "UnknownSignerError", "verify_signed_data"]

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_SEQUENCE, _SET, _INTEGER, _OCTETS, _OID = 0x30, 0x31, 0x02, 0x04, 0x06
_CONSTRUCTED_OCTETS = 0x24
_CONTEXT_0, _CONTEXT_1 = 0xA0, 0xA1
_MAX_DEPTH = 32

_SIGNED_DATA = "1.2.840.113549.1.7.2"
_DATA = "1.2.840.113549.1.7.1"
_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
_RSA_SIGNATURES = {
    "1.2.840.113549.1.1.1",  # rsaEncryption, the digest named apart
    "1.2.840.113549.1.1.11",  # sha256WithRSAEncryption
    "1.2.840.113549.1.1.12",  # sha384WithRSAEncryption
    "1.2.840.113549.1.1.13",  # sha512WithRSAEncryption
}


class SignatureError(ValueError):
    """The signed data is malformed or its signature does not verify; the message says which."""


class UnknownSignerError(SignatureError):
    """The signer is none of the trusted certificates."""


@dataclass(frozen=True)
class _Element:
    """One BER element: identifier octet, value (primitive) or children (constructed), and
    its encoding as it appeared."""

    tag: int
    value: bytes
    children: tuple[_Element, ...]
    encoded: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def _length(data: bytes, offset: int) -> tuple[int | None, int]:
    """The length at ``offset`` (``None``: indefinite) and where the value starts."""
    if offset >= len(data):
        raise SignatureError("truncated signature")
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    if first == 0x80:
        return None, offset + 1
    count = first & 0x7F
    if count > 4 or offset + 1 + count > len(data):
        raise SignatureError("malformed length in the signature")
    return int.from_bytes(data[offset + 1 : offset + 1 + count], "big"), offset + 1 + count


def _read(data: bytes, offset: int, depth: int) -> tuple[_Element, int]:
    """The element at ``offset`` and the offset after it."""
    if depth > _MAX_DEPTH:
        raise SignatureError("the signature nests too deeply")
    if offset >= len(data):
        raise SignatureError("truncated signature")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise SignatureError("unexpected high tag number in the signature")
    length, start = _length(data, offset + 1)
    constructed = bool(tag & 0x20)
    if length is None:
        if not constructed:
            raise SignatureError("indefinite length on a primitive element")
        children: list[_Element] = []
        position = start
        while data[position : position + 2] != b"\x00\x00":
            child, position = _read(data, position, depth + 1)
            children.append(child)
        end = position + 2
        return _Element(tag, b"", tuple(children), data[offset:end]), end
    end = start + length
    if end > len(data):
        raise SignatureError("truncated signature")
    value = data[start:end]
    if not constructed:
        return _Element(tag, value, (), data[offset:end]), end
    children = []
    position = start
    while position < end:
        child, position = _read(data[:end], position, depth + 1)
        children.append(child)
    return _Element(tag, value, tuple(children), data[offset:end]), end


def _expect(element: _Element, tag: int, what: str) -> _Element:
    if element.tag != tag:
        raise SignatureError(f"malformed signature: {what} has tag {element.tag:#04x}")
    return element


def _oid(element: _Element, what: str) -> str:
    value = _expect(element, _OID, what).value
    if not value or value[-1] & 0x80:
        raise SignatureError(f"malformed signature: {what} is not an object identifier")
    arcs: list[int] = []
    current = 0
    for byte in value:
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def _octets(element: _Element, what: str) -> bytes:
    """An OCTET STRING's bytes, its segments joined when it is constructed."""
    if element.tag == _OCTETS:
        return element.value
    if element.tag == _CONSTRUCTED_OCTETS:
        return b"".join(_octets(child, what) for child in element.children)
    raise SignatureError(f"malformed signature: {what} is not an octet string")


def _children(element: _Element, tag: int, what: str, least: int) -> tuple[_Element, ...]:
    children = _expect(element, tag, what).children
    if len(children) < least:
        raise SignatureError(f"malformed signature: {what} is incomplete")
    return children


@dataclass(frozen=True)
class _Signer:
    issuer: bytes
    serial: int
    digest: type[hashes.HashAlgorithm]
    signed_attributes: _Element | None
    signature: bytes


def _signer(element: _Element) -> _Signer:
    fields = _children(element, _SEQUENCE, "the signer info", 5)
    sid = _children(fields[1], _SEQUENCE, "the signer's issuer and serial number", 2)
    issuer = _expect(sid[0], _SEQUENCE, "the signer's issuer").encoded
    serial = int.from_bytes(_expect(sid[1], _INTEGER, "the signer's serial").value, signed=True)
    digest_oid = _oid(_children(fields[2], _SEQUENCE, "the digest algorithm", 1)[0], "digest")
    digest = _DIGESTS.get(digest_oid)
    if digest is None:
        raise SignatureError(f"digest algorithm {digest_oid} is not supported")
    rest = list(fields[3:])
    attributes = rest.pop(0) if rest and rest[0].tag == _CONTEXT_0 else None
    if len(rest) < 2:
        raise SignatureError("malformed signature: the signer info is incomplete")
    algorithm = _oid(_children(rest[0], _SEQUENCE, "the signature algorithm", 1)[0], "algorithm")
    if algorithm not in _RSA_SIGNATURES:
        raise SignatureError(f"signature algorithm {algorithm} is not supported")
    return _Signer(issuer, serial, digest, attributes, _octets(rest[1], "the signature"))


def _content_and_signer(der: bytes) -> tuple[bytes, _Signer]:
    root, end = _read(der, 0, 0)
    if end != len(der):
        raise SignatureError("malformed signature: data after the signed data")
    info = _children(root, _SEQUENCE, "the content info", 2)
    if _oid(info[0], "the content type") != _SIGNED_DATA:
        raise SignatureError("the signature is not PKCS #7 signed data")
    signed = _children(
        _children(info[1], _CONTEXT_0, "the content", 1)[0], _SEQUENCE, "the signed data", 4
    )
    encapsulated = _children(signed[2], _SEQUENCE, "the encapsulated content", 1)
    if _oid(encapsulated[0], "the encapsulated content type") != _DATA:
        raise SignatureError("the signed content is not data")
    if len(encapsulated) < 2:
        raise SignatureError("the signature carries no content")
    wrapper = _children(encapsulated[1], _CONTEXT_0, "the encapsulated content", 1)
    content = _octets(wrapper[0], "the encapsulated content")
    signers = _expect(signed[-1], _SET, "the signer infos").children
    if len(signers) != 1:
        raise SignatureError(f"the signature has {len(signers)} signers, not one")
    return content, _signer(signers[0])


def _signed_bytes(content: bytes, signer: _Signer) -> bytes:
    """What the signer's key signed: the content, or the DER SET of the signed attributes
    after checking that they name data and carry the content's digest."""
    if signer.signed_attributes is None:
        return content
    found: dict[str, _Element] = {}
    for attribute in signer.signed_attributes.children:
        parts = _children(attribute, _SEQUENCE, "a signed attribute", 2)
        values = _children(parts[1], _SET, "a signed attribute's values", 1)
        found[_oid(parts[0], "a signed attribute's type")] = values[0]
    kind, digest = found.get(_CONTENT_TYPE), found.get(_MESSAGE_DIGEST)
    if kind is None or digest is None:
        raise SignatureError("the signed attributes lack the content type or message digest")
    if _oid(kind, "the signed content type") != _DATA:
        raise SignatureError("the signed attributes name another content type")
    hasher = hashes.Hash(signer.digest())
    hasher.update(content)
    if not hmac.compare_digest(hasher.finalize(), _octets(digest, "the message digest")):
        raise SignatureError("the message digest does not match the signed content")
    body = b"".join(child.encoded for child in signer.signed_attributes.children)
    return bytes([_SET]) + _encode_length(len(body)) + body


def _encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    size = (length.bit_length() + 7) // 8
    return bytes([0x80 | size]) + length.to_bytes(size, "big")


def verify_signed_data(der: bytes, trusted: Sequence[x509.Certificate]) -> bytes:
    """The content ``der`` signs, once its signer is found among ``trusted`` (by issuer and
    serial number) and that certificate's RSA key verifies the signature.

    Raises :class:`UnknownSignerError` when no trusted certificate is the signer and
    :class:`SignatureError` for anything malformed or a signature that does not verify.
    """
    try:
        content, signer = _content_and_signer(der)
    except IndexError:
        raise SignatureError("truncated signature") from None
    candidates = [
        certificate
        for certificate in trusted
        if certificate.serial_number == signer.serial
        and certificate.issuer.public_bytes() == signer.issuer
    ]
    if not candidates:
        raise UnknownSignerError(
            f"the signer (serial {signer.serial:x}) is not a configured AWS certificate"
        )
    signed = _signed_bytes(content, signer)
    for certificate in candidates:
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            continue
        try:
            key.verify(signer.signature, signed, padding.PKCS1v15(), signer.digest())
        except InvalidSignature:
            continue
        return content
    raise SignatureError("the signature does not verify with the signer's certificate")
