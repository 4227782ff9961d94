"""Conversions between the SDK's records and column values.

Values written to the database were validated when they were written (a ``SpiffeId`` or
``Selector`` cannot exist unless valid), so reading them back skips validation: the
``Decoder`` builds identical objects without re-running the SPIFFE ID rules, and shares
equal selectors and parent IDs between entries. That is what keeps reading 100,000 entries
in one go fast.
"""

from __future__ import annotations

__all__ = [
    "Decoder",
    "bundle_from_row",
    "bundle_to_json",
    "from_micros",
    "selectors_hash",
    "to_micros",
]

import base64
import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.clock import utc
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SCHEME = "spiffe://"


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken to be UTC."""
    return (utc(moment) - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """The aware UTC datetime of a :func:`to_micros` value, exactly."""
    return _EPOCH + timedelta(microseconds=value)


def selectors_hash(selectors: Iterable[Selector]) -> bytes:
    """A digest of a selector *set*: equal sets (in any order) give equal digests."""
    canonical = json.dumps(sorted({(s.type, s.value) for s in selectors}), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


class Decoder:
    """Builds SDK values from stored columns, reusing objects for repeated values.

    One decoder serves one read; its caches die with it.
    """

    __slots__ = ("_ids", "_selectors", "_trust_domains")

    def __init__(self) -> None:
        self._ids: dict[str, SpiffeId] = {}
        self._selectors: dict[tuple[str, str], Selector] = {}
        self._trust_domains: dict[str, TrustDomain] = {}

    def trust_domain(self, name: str) -> TrustDomain:
        """The stored trust domain name as a value (not re-validated)."""
        found = self._trust_domains.get(name)
        if found is None:
            found = object.__new__(TrustDomain)
            object.__setattr__(found, "name", name)
            self._trust_domains[name] = found
        return found

    def spiffe_id(self, text: str) -> SpiffeId:
        """The stored ``spiffe://td/path`` string as a value (not re-validated)."""
        found = self._ids.get(text)
        if found is not None:
            return found
        rest = text[len(_SCHEME) :]
        slash = rest.find("/")
        name, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        found = object.__new__(SpiffeId)
        object.__setattr__(found, "trust_domain", self.trust_domain(name))
        object.__setattr__(found, "path", path)
        return found

    def shared_spiffe_id(self, text: str) -> SpiffeId:
        """Like :meth:`spiffe_id`, remembering the value for later rows (parent IDs repeat)."""
        found = self._ids.get(text)
        if found is None:
            found = self.spiffe_id(text)
            self._ids[text] = found
        return found

    def selector(self, kind: str, value: str) -> Selector:
        """The stored selector as a value, shared with equal selectors of other rows."""
        key = (kind, value)
        found = self._selectors.get(key)
        if found is None:
            found = object.__new__(Selector)
            object.__setattr__(found, "type", kind)
            object.__setattr__(found, "value", value)
            self._selectors[key] = found
        return found


def bundle_to_json(bundle: Bundle) -> bytes:
    """The authorities of a bundle as a JSON document (binary values in base64)."""
    document = {
        "x509": [
            {"der": base64.b64encode(a.der).decode(), "tainted": a.tainted}
            for a in bundle.x509_authorities
        ],
        "jwt": [
            {
                "kid": a.key_id,
                "key": base64.b64encode(a.public_key).decode(),
                "expires_at": None if a.expires_at is None else to_micros(a.expires_at),
                "tainted": a.tainted,
            }
            for a in bundle.jwt_authorities
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def bundle_from_row(
    trust_domain: str, sequence_number: int, refresh_hint: int, data: bytes
) -> Bundle:
    """The bundle stored as ``(trust_domain, sequence_number, refresh_hint, data)``."""
    document: dict[str, Any] = json.loads(data)
    return Bundle(
        trust_domain=TrustDomain(trust_domain),
        x509_authorities=tuple(
            X509Authority(der=base64.b64decode(item["der"]), tainted=bool(item["tainted"]))
            for item in document["x509"]
        ),
        jwt_authorities=tuple(
            JwtAuthority(
                key_id=str(item["kid"]),
                public_key=base64.b64decode(item["key"]),
                expires_at=None if item["expires_at"] is None else from_micros(item["expires_at"]),
                tainted=bool(item["tainted"]),
            )
            for item in document["jwt"]
        ),
        sequence_number=sequence_number,
        refresh_hint=refresh_hint,
    )
