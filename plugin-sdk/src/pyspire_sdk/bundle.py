"""Trust bundles: the public keys that verify a trust domain's SVIDs.

A :class:`Bundle` holds X.509 authorities (CA certificates, for X509-SVIDs) and JWT authorities
(public keys with a key ID, for JWT-SVIDs), plus the SPIFFE sequence number that changes on every
content change and the refresh hint that tells consumers how often to poll.
"""

from __future__ import annotations

__all__ = ["Bundle", "JwtAuthority", "X509Authority"]

from dataclasses import dataclass, replace
from datetime import datetime

from pyspire_sdk.spiffeid import TrustDomain


@dataclass(frozen=True, slots=True)
class X509Authority:
    """One CA certificate (DER). A tainted authority is on its way out and must not be used."""

    der: bytes
    tainted: bool = False


@dataclass(frozen=True, slots=True)
class JwtAuthority:
    """One JWT signing public key (SubjectPublicKeyInfo DER) under its ``kid``."""

    key_id: str
    public_key: bytes
    expires_at: datetime | None = None
    tainted: bool = False


@dataclass(frozen=True, slots=True)
class Bundle:
    """The trust bundle of one trust domain."""

    trust_domain: TrustDomain
    x509_authorities: tuple[X509Authority, ...] = ()
    jwt_authorities: tuple[JwtAuthority, ...] = ()
    sequence_number: int = 0
    refresh_hint: int = 0

    def with_changes(self, **changes: object) -> Bundle:
        """A copy with ``changes`` applied and the sequence number moved on by one."""
        return replace(self, sequence_number=self.sequence_number + 1, **changes)  # type: ignore[arg-type]
