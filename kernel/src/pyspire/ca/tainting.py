"""Tainting and revoking authorities in our trust bundle (SPIRE's datastore rules).

A tainted authority stays in the bundle, marked, so every consumer keeps verifying what it
signed while knowing to replace it; a revoked one leaves the bundle. Only a tainted authority
may be revoked. X.509 authorities are named by the hex subject key ID of their certificate, JWT
authorities by their key ID. Each function is a pure bundle mutation for
``DataStore.update_bundle``: an error leaves the stored bundle as it was.
"""

from __future__ import annotations

__all__ = [
    "authority_key_id",
    "chains_to",
    "revoke_jwt_key",
    "revoke_x509_ca",
    "subject_key_id",
    "taint_jwt_key",
    "taint_x509_ca",
]

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError

Mutation = Callable[[Bundle | None], Bundle]


def subject_key_id(der: bytes) -> str:
    """The hex subject key ID of a CA certificate, empty when it has none or does not parse."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return ""
    return ski.value.digest.hex()


def authority_key_id(der: bytes) -> str:
    """The hex authority key ID of a certificate, empty when it has none or does not parse."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return ""
    return bytes(aki.value.key_identifier or b"").hex()


def chains_to(chain: Sequence[bytes], authorities: Collection[bytes]) -> bool:
    """Whether a certificate chain (DER, leaf first) leads to one of ``authorities`` (DER
    certificates): a certificate of the chain is one of them, or was signed by one (its
    authority key ID is that one's subject key ID or, without key IDs, that one's signature
    verifies on it). How an agent tells an SVID of a tainted authority and a server a CA that a
    tainted upstream root signed."""
    if not authorities:
        return False
    if any(der in chain for der in authorities):
        return True
    key_ids = {subject_key_id(der) for der in authorities} - {""}
    if any(authority_key_id(der) in key_ids for der in chain):
        return True
    return any(_issued_by(der, authority) for der in chain for authority in authorities)


def _issued_by(der: bytes, authority_der: bytes) -> bool:
    try:
        certificate = x509.load_der_x509_certificate(der)
        authority = x509.load_der_x509_certificate(authority_der)
        if certificate.issuer != authority.subject:
            return False
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _require(bundle: Bundle | None) -> Bundle:
    if bundle is None:
        raise NotFoundError("bundle not found")
    return bundle


def taint_x509_ca(authority_id: str) -> Mutation:
    """Mark the root CAs whose subject key ID is ``authority_id`` as tainted."""

    def mutate(current: Bundle | None) -> Bundle:
        bundle = _require(current)
        found = False
        authorities: list[X509Authority] = []
        for authority in bundle.x509_authorities:
            if subject_key_id(authority.der) == authority_id:
                if authority.tainted:
                    raise InvalidArgumentError("root CA is already tainted")
                found = True
                authority = replace(authority, tainted=True)
            authorities.append(authority)
        if not found:
            raise NotFoundError("no ca found with provided subject key ID")
        return replace(
            bundle,
            x509_authorities=tuple(authorities),
            sequence_number=bundle.sequence_number + 1,
        )

    return mutate


def revoke_x509_ca(authority_id: str) -> Mutation:
    """Remove the tainted root CAs whose subject key ID is ``authority_id``."""

    def mutate(current: Bundle | None) -> Bundle:
        bundle = _require(current)
        kept: list[X509Authority] = []
        found = False
        for authority in bundle.x509_authorities:
            if subject_key_id(authority.der) == authority_id:
                if not authority.tainted:
                    raise InvalidArgumentError("it is not possible to revoke an untainted root CA")
                found = True
                continue
            kept.append(authority)
        if not found:
            raise NotFoundError("no root CA found with provided subject key ID")
        return replace(
            bundle, x509_authorities=tuple(kept), sequence_number=bundle.sequence_number + 1
        )

    return mutate


def taint_jwt_key(key_id: str) -> Mutation:
    """Mark the JWT authority ``key_id`` as tainted."""

    def mutate(current: Bundle | None) -> Bundle:
        bundle = _require(current)
        matching = [a for a in bundle.jwt_authorities if a.key_id == key_id]
        if not matching:
            raise NotFoundError("no JWT Key found with provided key ID")
        if len(matching) > 1:
            raise InvalidArgumentError("another JWT Key found with the same KeyID")
        if matching[0].tainted:
            raise InvalidArgumentError("key is already tainted")
        return replace(
            bundle,
            jwt_authorities=tuple(
                replace(a, tainted=True) if a.key_id == key_id else a
                for a in bundle.jwt_authorities
            ),
            sequence_number=bundle.sequence_number + 1,
        )

    return mutate


def revoke_jwt_key(key_id: str) -> Mutation:
    """Remove the tainted JWT authority ``key_id``."""

    def mutate(current: Bundle | None) -> Bundle:
        bundle = _require(current)
        matching = [a for a in bundle.jwt_authorities if a.key_id == key_id]
        if not matching:
            raise NotFoundError("no JWT Key found with provided key ID")
        if len(matching) > 1:
            raise InvalidArgumentError("another key found with the same KeyID")
        if not matching[0].tainted:
            raise InvalidArgumentError("it is not possible to revoke an untainted key")
        return replace(
            bundle,
            jwt_authorities=tuple(a for a in bundle.jwt_authorities if a.key_id != key_id),
            sequence_number=bundle.sequence_number + 1,
        )

    return mutate
