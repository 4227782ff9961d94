"""The TBSCertificate of an X509-SVID leaf, encoded directly in DER.

SVID issuance is the server's hot path. Building the same structure through ``cryptography``'s
builder costs a throwaway signature and several conversions per leaf; encoding the fixed shape
of an SVID directly is several times cheaper. The shape is exactly what
:func:`pyspire.ca.templates.svid_builder` produces with ``cryptography`` (a test compares the two
byte for byte), so the two cannot drift apart unnoticed.

:func:`svid_tbs` encodes one leaf from scratch. :class:`SvidTemplate` is the same encoder split
along what changes how often: the parts fixed by the issuer are encoded once per CA, the names
once per identity (:func:`leaf_names`, cached), the validity once per batch, and only the serial,
the key and its identifier for every leaf. Both produce the same bytes (a test holds them equal).

Credential composers may give a leaf another subject and extra extensions
(:mod:`pyspire_sdk.plugins.credential_composer`). Those are encoded here too, strings typed the
way ``cryptography`` types a name attribute by default, so a composed leaf is again exactly what
the builder would make (a test holds that too). A leaf nobody composed takes the default subject
and no extra extension, and costs what it always did.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from pyspire.der import (
    encode_oid,
    encode_tlv,
    extension,
    read_tlv,
    sequence,
    spiffe_san_extension,
)
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugins.credential_composer import Extension, SubjectAttribute

_SEQUENCE = 0x30
_SET = 0x31
_INTEGER = 0x02
_BIT_STRING = 0x03
_OCTET_STRING = 0x04
_UTF8_STRING = 0x0C
_PRINTABLE_STRING = 0x13
_IA5_STRING = 0x16
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


def encode_integer(value: int) -> bytes:
    """A non-negative INTEGER element, minimally encoded."""
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return encode_tlv(_INTEGER, body)


def encode_time(moment: datetime) -> bytes:
    """UTCTime for 1950 to 2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5)."""
    moment = moment.astimezone(UTC)
    if 1950 <= moment.year < 2050:
        return encode_tlv(_UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return encode_tlv(_GENERALIZED_TIME, moment.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


_VERSION_3 = b"\xa0\x03\x02\x01\x02"
_BASIC_CONSTRAINTS_LEAF = extension("2.5.29.19", sequence(), critical=True)
# digitalSignature, keyEncipherment, keyAgreement: bits 0, 2, 4 -> 0b10101000, 3 unused bits.
_KEY_USAGE_LEAF = extension("2.5.29.15", encode_tlv(_BIT_STRING, b"\x03\xa8"), critical=True)
_EXTENDED_KEY_USAGE = extension(
    "2.5.29.37", sequence(encode_oid("1.3.6.1.5.5.7.3.1"), encode_oid("1.3.6.1.5.5.7.3.2"))
)
COMMON_NAME_OID = "2.5.4.3"
DEFAULT_SVID_SUBJECT: tuple[SubjectAttribute, ...] = (
    SubjectAttribute("2.5.4.6", "US"),
    SubjectAttribute("2.5.4.10", "SPIRE"),
)
"""``C=US, O=SPIRE``: the subject of an X509-SVID, before any credential composer."""

# The string type of a name attribute, as ``cryptography`` chooses it by default (its
# ``_NAMEOID_DEFAULT_TYPE``): a test compares whole names with ``cryptography``'s encoding.
_STRING_TYPES: dict[str, int] = {
    "2.5.4.6": _PRINTABLE_STRING,  # countryName
    "1.3.6.1.4.1.311.60.2.1.3": _PRINTABLE_STRING,  # jurisdictionCountryName
    "2.5.4.5": _PRINTABLE_STRING,  # serialNumber
    "2.5.4.46": _PRINTABLE_STRING,  # dnQualifier
    "1.2.840.113549.1.9.1": _IA5_STRING,  # emailAddress
    "0.9.2342.19200300.100.1.25": _IA5_STRING,  # domainComponent
}
_PRINTABLE_ALPHABET = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]*$")


def _attribute(attribute: SubjectAttribute) -> bytes:
    tag = _STRING_TYPES.get(attribute.oid, _UTF8_STRING)
    if tag == _PRINTABLE_STRING and not _PRINTABLE_ALPHABET.match(attribute.value):
        raise InvalidArgumentError(
            f"subject attribute {attribute.oid} value {attribute.value!r} has characters a "
            "PrintableString cannot carry"
        )
    if tag == _IA5_STRING and not attribute.value.isascii():
        raise InvalidArgumentError(
            f"subject attribute {attribute.oid} value {attribute.value!r} is not ASCII"
        )
    value = encode_tlv(tag, attribute.value.encode("utf-8"))
    return encode_tlv(_SET, sequence(encode_oid(attribute.oid), value))


def encode_name(attributes: Sequence[SubjectAttribute]) -> bytes:
    """A DER Name with one relative distinguished name per attribute, in the given order."""
    return _encoded_name(tuple(attributes))


@lru_cache(maxsize=1024)
def _encoded_name(attributes: tuple[SubjectAttribute, ...]) -> bytes:
    # Leaves share a few subjects (``C=US, O=SPIRE``, or what composers make with a CN per DNS
    # name) while their identities are new in a burst, past what :func:`leaf_names` keeps.
    return sequence(*(_attribute(attribute) for attribute in attributes))


def leaf_subject(subject: Sequence[SubjectAttribute], dns_names: Sequence[str] = ()) -> bytes:
    """The DER subject of a leaf: ``subject``, and ``CN=<first DNS name>`` after it when there
    are DNS names and ``subject`` has no common name."""
    if dns_names and all(attribute.oid != COMMON_NAME_OID for attribute in subject):
        subject = (*subject, SubjectAttribute(COMMON_NAME_OID, dns_names[0]))
    return encode_name(subject)


def svid_subject(common_name: str = "") -> bytes:
    """``C=US, O=SPIRE`` and, when given, ``CN=<first DNS name>`` as a DER Name."""
    return leaf_subject(DEFAULT_SVID_SUBJECT, (common_name,) if common_name else ())


def encode_extensions(extensions: Sequence[Extension]) -> bytes:
    """The Extension elements of ``extensions``, concatenated in order."""
    return b"".join(extension(item.oid, item.value, critical=item.critical) for item in extensions)


# Every EC P-256 SubjectPublicKeyInfo with an uncompressed point starts with these bytes (up to
# the BIT STRING's unused-bits octet) and is 91 bytes long.
P256_SPKI_HEAD = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
P256_SPKI_SIZE = 91


def subject_key_identifier(spki_der: bytes) -> bytes:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2, method 1)."""
    if len(spki_der) == P256_SPKI_SIZE and spki_der.startswith(P256_SPKI_HEAD):
        return hashlib.sha1(spki_der[len(P256_SPKI_HEAD) :], usedforsecurity=False).digest()
    _, start, _ = read_tlv(spki_der)
    _, _, alg_end = read_tlv(spki_der, start)
    tag, bits_start, bits_end = read_tlv(spki_der, alg_end)
    if tag != _BIT_STRING:
        raise ValueError("not a SubjectPublicKeyInfo")
    return hashlib.sha1(spki_der[bits_start + 1 : bits_end], usedforsecurity=False).digest()


def svid_tbs(
    *,
    serial: int,
    signature_algorithm: bytes,
    issuer: bytes,
    not_before: datetime,
    not_after: datetime,
    spki: bytes,
    authority_key_id: bytes,
    spiffe_id: str,
    dns_names: Sequence[str] = (),
    subject: Sequence[SubjectAttribute] = DEFAULT_SVID_SUBJECT,
    extra_extensions: Sequence[Extension] = (),
) -> bytes:
    """The DER TBSCertificate of an X509-SVID leaf.

    ``signature_algorithm`` is the issuer's AlgorithmIdentifier element, ``issuer`` its subject
    Name element and ``spki`` the leaf's SubjectPublicKeyInfo element, all DER. ``subject`` and
    ``extra_extensions`` are what credential composers made of the leaf (the extras follow the
    SVID's own extensions).
    """
    extensions = b"".join(
        (
            _BASIC_CONSTRAINTS_LEAF,
            _KEY_USAGE_LEAF,
            _EXTENDED_KEY_USAGE,
            extension("2.5.29.14", encode_tlv(_OCTET_STRING, subject_key_identifier(spki))),
            extension("2.5.29.35", sequence(encode_tlv(0x80, authority_key_id))),
            spiffe_san_extension(spiffe_id, dns_names),
            encode_extensions(extra_extensions),
        )
    )
    return sequence(
        _VERSION_3,
        encode_integer(serial),
        signature_algorithm,
        issuer,
        sequence(encode_time(not_before), encode_time(not_after)),
        leaf_subject(subject, dns_names),
        spki,
        encode_tlv(0xA3, sequence(extensions)),
    )


# The SubjectKeyIdentifier extension around a SHA-1 digest (always 20 bytes): everything but
# the digest is fixed.
_SKI_DIGEST_SIZE = 20
_SKI_EXTENSION_HEAD = extension("2.5.29.14", encode_tlv(_OCTET_STRING, bytes(_SKI_DIGEST_SIZE)))[
    :-_SKI_DIGEST_SIZE
]
_SERIAL_BITS = 128


def encode_validity(not_before: datetime, not_after: datetime) -> bytes:
    """The Validity element (``SEQUENCE { notBefore, notAfter }``)."""
    return sequence(encode_time(not_before), encode_time(not_after))


@lru_cache(maxsize=8192)
def leaf_names(
    spiffe_id: str,
    dns_names: tuple[str, ...] = (),
    subject: tuple[SubjectAttribute, ...] = DEFAULT_SVID_SUBJECT,
) -> tuple[bytes, bytes]:
    """The subject Name element and the SubjectAlternativeName extension of a leaf for
    ``spiffe_id`` and ``dns_names`` (``subject`` as :func:`leaf_subject` completes it).

    Both depend only on the identity, which a server signs again and again, so the last few
    thousand are kept (the result is immutable bytes; the cache never affects what is signed).
    A burst of identities new to the server misses the cache every time, so the usual leaf (the
    default subject, no DNS name) takes a subject encoded once.
    """
    san_extension = spiffe_san_extension(spiffe_id, dns_names)
    if subject is DEFAULT_SVID_SUBJECT and not dns_names:
        return _DEFAULT_SUBJECT_NAME, san_extension
    return leaf_subject(subject, dns_names), san_extension


_DEFAULT_SUBJECT_NAME = encode_name(DEFAULT_SVID_SUBJECT)


def random_serial_elements(count: int) -> list[bytes]:
    """``count`` INTEGER elements of random positive serial numbers of up to 128 bits each.

    The randomness for all of them is read from the operating system's CSPRNG at once.
    """
    size = _SERIAL_BITS // 8
    pool = secrets.token_bytes(size * count)
    return [
        encode_integer(int.from_bytes(pool[offset : offset + size], "big") or 1)
        for offset in range(0, size * count, size)
    ]


@dataclass(frozen=True, slots=True)
class SvidTemplate:
    """Everything in an X509-SVID leaf's TBSCertificate that only the issuer decides, encoded
    once: :meth:`tbs` adds the rest and returns exactly what :func:`svid_tbs` returns for the
    same inputs."""

    algorithm_and_issuer: bytes
    """The signature AlgorithmIdentifier followed by the issuer Name, both DER."""
    fixed_extensions: bytes
    """Basic constraints, key usage and extended key usage."""
    authority_key_extension: bytes
    """The AuthorityKeyIdentifier extension naming the issuer's key."""

    @classmethod
    def of(
        cls, *, signature_algorithm: bytes, issuer: bytes, authority_key_id: bytes
    ) -> SvidTemplate:
        """The template of an issuer: its AlgorithmIdentifier and subject Name elements (DER)
        and its subject key identifier."""
        return cls(
            algorithm_and_issuer=signature_algorithm + issuer,
            fixed_extensions=_BASIC_CONSTRAINTS_LEAF + _KEY_USAGE_LEAF + _EXTENDED_KEY_USAGE,
            authority_key_extension=extension(
                "2.5.29.35", sequence(encode_tlv(0x80, authority_key_id))
            ),
        )

    def tbs(
        self,
        *,
        serial: bytes,
        validity: bytes,
        names: tuple[bytes, bytes],
        spki: bytes,
        extra_extensions: bytes = b"",
    ) -> bytes:
        """The DER TBSCertificate of one leaf.

        ``serial`` is the INTEGER element (:func:`random_serial_elements`), ``validity`` the
        Validity element (:func:`encode_validity`), ``names`` what :func:`leaf_names` returns for
        the leaf's identity, ``spki`` the leaf's SubjectPublicKeyInfo element and
        ``extra_extensions`` composed extensions as :func:`encode_extensions` encodes them.
        """
        subject, san_extension = names
        extensions = encode_tlv(
            _SEQUENCE,
            self.fixed_extensions
            + _SKI_EXTENSION_HEAD
            + subject_key_identifier(spki)
            + self.authority_key_extension
            + san_extension
            + extra_extensions,
        )
        return encode_tlv(
            _SEQUENCE,
            b"".join(
                (
                    _VERSION_3,
                    serial,
                    self.algorithm_and_issuer,
                    validity,
                    subject,
                    spki,
                    encode_tlv(0xA3, extensions),
                )
            ),
        )
