"""Minting X509-SVIDs from a public key, and reading the public key out of a CSR."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import SignatureAlgorithmOID

from pyspire.ca.authorities import X509CA
from pyspire.ca.signing import ManagedKey, public_key_type
from pyspire.ca.svid_der import (
    DEFAULT_SVID_SUBJECT,
    P256_SPKI_HEAD,
    P256_SPKI_SIZE,
    encode_extensions,
    encode_validity,
    leaf_names,
    random_serial_elements,
)
from pyspire.ca.templates import BACKDATE
from pyspire.der import join_signed, read_tlv
from pyspire_sdk.errors import InvalidArgumentError, PyspireError
from pyspire_sdk.plugins.credential_composer import Extension, SubjectAttribute
from pyspire_sdk.spiffeid import SpiffeId


@dataclass(frozen=True)
class MintedSvid:
    """A freshly signed X509-SVID: the DER chain to send (leaf first) and the leaf's expiry."""

    chain: tuple[bytes, ...]
    not_after: datetime


@dataclass(frozen=True, slots=True)
class LeafRequest:
    """One X509-SVID to sign: for ``public_key``, naming ``spiffe_id`` and ``dns_names``, valid
    for ``ttl``, with ``subject`` and ``extra_extensions`` (as credential composers left them;
    the defaults are an SVID nobody composed)."""

    spiffe_id: SpiffeId
    public_key: CertificatePublicKeyTypes
    ttl: timedelta
    dns_names: tuple[str, ...] = ()
    subject: tuple[SubjectAttribute, ...] = DEFAULT_SVID_SUBJECT
    extra_extensions: tuple[Extension, ...] = ()
    spki: bytes = b""
    """``public_key``'s SubjectPublicKeyInfo DER as ``cryptography`` encodes it, when already
    at hand (:class:`CheckedKey`); empty to have it encoded when the leaf is signed."""


class CheckedKey(NamedTuple):
    """A public key to certify and its SubjectPublicKeyInfo DER, exactly as ``cryptography``
    encodes it (what a leaf carries), so the key is encoded at most once per leaf."""

    public_key: CertificatePublicKeyTypes
    spki: bytes

    @classmethod
    def of(cls, public_key: CertificatePublicKeyTypes) -> CheckedKey:
        """``public_key`` with its encoding; InvalidArgumentError for a key of a type no SVID
        may carry."""
        return cls(public_key, _spki(public_key))


async def mint_x509_svid(
    ca: X509CA,
    *,
    spiffe_id: SpiffeId,
    public_key: CertificatePublicKeyTypes,
    ttl: timedelta,
    now: datetime,
    dns_names: Sequence[str] = (),
) -> MintedSvid:
    """Sign an X509-SVID for ``public_key``, valid ``ttl`` from ``now`` (backdated for clock
    skew) and never past the CA's own expiry."""
    return await mint_leaf(ca, LeafRequest(spiffe_id, public_key, ttl, tuple(dns_names)), now=now)


async def mint_leaf(ca: X509CA, request: LeafRequest, *, now: datetime) -> MintedSvid:
    """Sign the X509-SVID ``request`` describes, as :func:`mint_x509_svids` signs each one."""
    [minted] = await mint_x509_svids(ca, [request], now=now)
    if isinstance(minted, PyspireError):
        raise minted
    return minted


class BatchSigner(Protocol):
    """Signs many payloads with one key at once elsewhere (worker processes), or declines."""

    async def sign(self, key: ManagedKey, payloads: Sequence[bytes]) -> list[bytes] | None:
        """Each payload signed with ``key`` as its key manager signs, or None to decline."""
        ...


async def mint_x509_svids(
    ca: X509CA,
    requests: Sequence[LeafRequest],
    *,
    now: datetime,
    signer: BatchSigner | None = None,
) -> list[MintedSvid | PyspireError]:
    """Sign one X509-SVID per request, all valid from ``now`` (backdated for clock skew) and
    never past the CA's own expiry; in request order.

    A request that cannot be signed (an ID without a path, an unsupported key, a key manager
    failure) gets its error in its place and leaves the others unaffected. The leaves are
    signed together by ``signer`` when it takes the CA's key, else one after the other through
    the CA's key manager.
    """
    template = ca.svid_template
    ca_not_after = ca.not_after
    not_before = max(now - BACKDATE, ca.not_before)
    # Leaves of one batch mostly share a TTL, hence a validity: encode each one once.
    validities: dict[timedelta, tuple[datetime, bytes]] = {}
    prepared: list[tuple[bytes, datetime] | PyspireError] = []
    serials = random_serial_elements(len(requests))
    for request, serial in zip(requests, serials, strict=True):
        try:
            validity = validities.get(request.ttl)
            if validity is None:
                not_after = min(now + request.ttl, ca_not_after).replace(microsecond=0)
                validity = validities[request.ttl] = (
                    not_after,
                    encode_validity(not_before, not_after),
                )
            tbs = template.tbs(
                serial=serial,
                validity=validity[1],
                names=_leaf_names(request),
                spki=request.spki or _spki(request.public_key),
                extra_extensions=encode_extensions(request.extra_extensions)
                if request.extra_extensions
                else b"",
            )
        except PyspireError as error:
            prepared.append(error)
            continue
        prepared.append((tbs, validity[0]))
    signatures = await _signatures(
        ca, [item[0] for item in prepared if not isinstance(item, PyspireError)], signer
    )
    return _assembled(ca, prepared, signatures)


async def _signatures(
    ca: X509CA, payloads: Sequence[bytes], signer: BatchSigner | None
) -> list[bytes | PyspireError]:
    """A signature (or why there is none) per payload, by ``signer`` when it takes the key."""
    if signer is not None and payloads:
        signed = await signer.sign(ca.key, payloads)
        if signed is not None:
            return list(signed)
    sign = ca.key.sign
    signatures: list[bytes | PyspireError] = []
    for payload in payloads:
        try:
            signatures.append(await sign(payload))
        except PyspireError as error:
            signatures.append(error)
    return signatures


def _assembled(
    ca: X509CA,
    prepared: Sequence[tuple[bytes, datetime] | PyspireError],
    signatures: Sequence[bytes | PyspireError],
) -> list[MintedSvid | PyspireError]:
    algorithm = ca.signature_algorithm_der
    chain = ca.chain_der()
    signed = iter(signatures)
    results: list[MintedSvid | PyspireError] = []
    for item in prepared:
        if isinstance(item, PyspireError):
            results.append(item)
            continue
        signature = next(signed)
        if isinstance(signature, PyspireError):
            results.append(signature)
            continue
        tbs, not_after = item
        results.append(
            MintedSvid(chain=(join_signed(tbs, algorithm, signature), *chain), not_after=not_after)
        )
    return results


def _leaf_names(request: LeafRequest) -> tuple[bytes, bytes]:
    if request.spiffe_id.is_trust_domain_id():
        raise InvalidArgumentError("an X509-SVID needs a SPIFFE ID with a path")
    if request.subject is DEFAULT_SVID_SUBJECT:
        return leaf_names(str(request.spiffe_id), request.dns_names)
    return leaf_names(str(request.spiffe_id), request.dns_names, request.subject)


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    try:
        public_key_type(public_key)
    except ValueError as error:
        raise InvalidArgumentError(str(error)) from None
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_csr(csr_der: bytes) -> CertificatePublicKeyTypes:
    """The public key of a DER CSR whose self-signature checks out (see :func:`checked_csr`)."""
    return checked_csr(csr_der).public_key


def checked_csr(csr_der: bytes) -> CheckedKey:
    """The public key of a DER CSR whose self-signature checks out, with its encoding.

    Only the key is taken from a CSR; names and extensions in it are ignored, since the entry
    decides what the SVID says.
    """
    if not csr_der:
        raise InvalidArgumentError("missing CSR")
    try:
        csr = x509.load_der_x509_csr(csr_der)
        public_key = csr.public_key()
    except (ValueError, TypeError) as error:
        raise InvalidArgumentError(f"malformed CSR: {error}") from None
    info = csr.tbs_certrequest_bytes
    if not _csr_signature_holds(csr, public_key, info):
        raise InvalidArgumentError("invalid CSR signature")
    try:
        public_key_type(public_key)
    except ValueError as error:
        raise InvalidArgumentError(f"malformed CSR: {error}") from None
    return CheckedKey(public_key, _csr_spki(info, public_key))


def _csr_spki(info: bytes, public_key: CertificatePublicKeyTypes) -> bytes:
    """The SubjectPublicKeyInfo of a parsed CSR's request info as ``cryptography`` encodes
    ``public_key``: for the usual P-256 key with an uncompressed point, the CSR's own bytes
    (its DER can only be that one encoding), else ``public_key`` encoded anew."""
    _, start, _ = read_tlv(info)
    _, _, version_end = read_tlv(info, start)
    _, _, subject_end = read_tlv(info, version_end)
    _, _, spki_end = read_tlv(info, subject_end)
    if (
        spki_end - subject_end == P256_SPKI_SIZE
        and info.startswith(P256_SPKI_HEAD, subject_end)
        and info[subject_end + len(P256_SPKI_HEAD)] == _UNCOMPRESSED_POINT
    ):
        return info[subject_end:spki_end]
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


_UNCOMPRESSED_POINT = 0x04
"""The first octet of an uncompressed EC point (SEC 1 §2.3.3), the form ``cryptography``
writes; a compressed or hybrid point in a CSR is encoded anew."""


# ECDSA signatures, the kind agents send, are checked directly with the key already loaded;
# ``is_signature_valid`` would decode the key a second time, a fifth of the check's cost.
_ECDSA_SIGNATURES: dict[x509.ObjectIdentifier, ec.ECDSA] = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}


def _csr_signature_holds(
    csr: x509.CertificateSigningRequest, public_key: CertificatePublicKeyTypes, info: bytes
) -> bool:
    """Whether the CSR's self-signature over ``info`` (its request info) verifies with its own
    public key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        algorithm = _ECDSA_SIGNATURES.get(csr.signature_algorithm_oid)
        if algorithm is not None:
            try:
                public_key.verify(csr.signature, info, algorithm)
            except InvalidSignature:
                return False
            return True
    try:
        return csr.is_signature_valid
    except (ValueError, TypeError):
        return False
