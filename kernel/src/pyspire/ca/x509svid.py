"""Minting X509-SVIDs from a public key, and reading the public key out of a CSR."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pyspire.ca.authorities import X509CA
from pyspire.ca.signing import public_key_type, sign_certificate
from pyspire.ca.templates import svid_builder
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId


async def mint_x509_svid(
    ca: X509CA,
    *,
    spiffe_id: SpiffeId,
    public_key: CertificatePublicKeyTypes,
    ttl: timedelta,
    now: datetime,
    dns_names: Sequence[str] = (),
) -> list[x509.Certificate]:
    """Sign an X509-SVID for ``public_key``; returns the leaf followed by the chain to send."""
    if spiffe_id.is_trust_domain_id():
        raise InvalidArgumentError("an X509-SVID needs a SPIFFE ID with a path")
    public_key_type(public_key)
    builder = svid_builder(
        spiffe_id=spiffe_id,
        public_key=public_key,
        issuer=ca.certificate,
        now=now,
        ttl=ttl,
        dns_names=dns_names,
    )
    leaf = await sign_certificate(builder, ca.key)
    chain = [x509.load_der_x509_certificate(der) for der in ca.chain_der()]
    return [leaf, *chain]


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
