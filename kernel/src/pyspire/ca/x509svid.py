"""Minting X509-SVIDs from a public key, and reading the public key out of a CSR."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pyspire.ca.authorities import X509CA
from pyspire.ca.der import join_signed
from pyspire.ca.signing import public_key_type
from pyspire.ca.svid_der import svid_tbs
from pyspire.ca.templates import BACKDATE, random_serial
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId


@dataclass(frozen=True)
class MintedSvid:
    """A freshly signed X509-SVID: the DER chain to send (leaf first) and the leaf's expiry."""

    chain: tuple[bytes, ...]
    not_after: datetime


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
    if spiffe_id.is_trust_domain_id():
        raise InvalidArgumentError("an X509-SVID needs a SPIFFE ID with a path")
    public_key_type(public_key)
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    not_after = min(now + ttl, ca.not_after).replace(microsecond=0)
    tbs = svid_tbs(
        serial=random_serial(),
        signature_algorithm=ca.signature_algorithm_der,
        issuer=ca.subject_der,
        not_before=max(now - BACKDATE, ca.not_before),
        not_after=not_after,
        spki=spki,
        authority_key_id=ca.key_identifier,
        spiffe_id=str(spiffe_id),
        dns_names=dns_names,
    )
    signature = await ca.key.sign(tbs)
    leaf = join_signed(tbs, ca.signature_algorithm_der, signature)
    return MintedSvid(chain=(leaf, *ca.chain_der()), not_after=not_after)


def public_key_from_csr(csr_der: bytes) -> CertificatePublicKeyTypes:
    """The public key of a DER CSR whose self-signature checks out.

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
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise InvalidArgumentError("invalid CSR signature")
    try:
        public_key_type(public_key)
    except ValueError as error:
        raise InvalidArgumentError(f"malformed CSR: {error}") from None
    return public_key
