"""Re-minting what a tainted authority signed, spread over time.

When an operator taints an authority (``localauthority x509 taint``), every agent finds the mark
in the bundle at its next sync and must replace every SVID that authority signed. Asking for all
of them at once would have every agent of the trust domain hit the server in the same seconds,
so each SVID gets its own moment within :data:`TAINT_SPREAD` after the agent first saw the
taint: a fixed fraction of the window drawn from its entry ID, so the moments are spread evenly
and stay the same from one sync to the next. With the default sync interval of 5 s the
re-minting is done within about 15 s of the taint (SPIRE's agent rotates 100 SVIDs every 5 s,
some 50 s for 1,000). Workload SVIDs and the SVIDs of entries kept for SVID stores follow the
same rule, through :func:`pyspire.agent.cache.stale_reason`, each cache with its own
:class:`TaintSchedule`. JWT-SVIDs signed by a tainted JWT key are simply dropped from the
JWT-SVID cache: the next request mints a new one with the active key.
"""

from __future__ import annotations

__all__ = ["TAINT_SPREAD", "TaintSchedule", "jwt_key_id", "signed_by_tainted"]

import hashlib
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from pyspire.ca.tainting import chains_to
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.jwt import SUPPORTED_ALGORITHMS, InvalidJwtError, parse_jwt

TAINT_SPREAD = timedelta(seconds=10)
"""The window over which an agent re-mints the SVIDs of a tainted authority."""


def _fraction(entry_id: str) -> float:
    """A stable number in [0, 1) for an entry: where in the window its SVID is re-minted."""
    digest = hashlib.sha256(entry_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class TaintSchedule:
    """When each SVID whose issuer is tainted is due to be replaced."""

    def __init__(self, spread: timedelta = TAINT_SPREAD) -> None:
        self._spread = spread
        self._since: dict[bytes, datetime] = {}

    def observe(self, authorities: Mapping[bytes, bool], now: datetime) -> None:
        """Note the tainted authorities of a new bundle index (identifier → tainted); a taint
        keeps the moment it was first seen."""
        self._since = {
            identifier: self._since.get(identifier, now)
            for identifier, tainted in authorities.items()
            if tainted
        }

    def due(self, entry_id: str, issuer_ids: Collection[bytes], now: datetime) -> bool:
        """Whether the SVID of ``entry_id`` signed by ``issuer_ids`` should be replaced now."""
        seen = [self._since[identifier] for identifier in issuer_ids if identifier in self._since]
        if not seen:
            return True
        return now >= min(seen) + self._spread * _fraction(entry_id)


def jwt_key_id(token: str) -> str | None:
    """The ``kid`` of a JWT-SVID's header, ``None`` when it has none or does not parse."""
    try:
        return parse_jwt(token, algorithms=SUPPORTED_ALGORITHMS).key_id
    except (InvalidJwtError, ValueError):
        return None


def signed_by_tainted(chain: Sequence[bytes], bundle: Bundle) -> bool:
    """Whether the certificate chain (DER, leaf first) leads to an authority ``bundle`` marks
    tainted (see :func:`pyspire.ca.tainting.chains_to`)."""
    return chains_to(chain, [a.der for a in bundle.x509_authorities if a.tainted])
