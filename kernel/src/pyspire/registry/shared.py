"""One object for each value that many registry entries repeat.

A refresh reads entries from the datastore one at a time, so every entry arrives with objects
of its own: its parent's SPIFFE ID (the same for the twenty entries of an agent), the trust
domain of both IDs (the same for nearly all entries), its selectors (``unix:uid:1000`` under
every agent). :class:`SharedValues` points an entry's fields at objects already held for an
equal value, so a registry of many agents keeps each repeated value once.

The table of known values is bounded: past ``limit`` values it starts afresh. Entries made
before keep what they share, and nothing is ever wrong, only less shared, so churn that brings
ever new values (an entry created and deleted with a new selector each time) cannot grow it.
"""

from __future__ import annotations

__all__ = ["SharedValues"]

from typing import TypeVar

from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

_Value = TypeVar("_Value", TrustDomain, SpiffeId, Selector, tuple[Selector, ...])


class SharedValues:
    """Equal values made one object; see the module documentation. One event loop, no locks."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._known: dict[object, object] = {}

    def __len__(self) -> int:
        return len(self._known)

    def _one(self, value: _Value) -> _Value:
        known = self._known
        found = known.get(value)
        if found is None:
            if len(known) >= self._limit:
                known.clear()
            known[value] = found = value
        return found  # type: ignore[return-value]

    def trust_domain(self, trust_domain: TrustDomain) -> TrustDomain:
        """The held trust domain equal to ``trust_domain``."""
        return self._one(trust_domain)

    def spiffe_id(self, spiffe_id: SpiffeId) -> SpiffeId:
        """The held SPIFFE ID equal to ``spiffe_id``, its trust domain shared too."""
        found = self._known.get(spiffe_id)
        if found is not None:
            return found  # type: ignore[return-value]
        _share_field(spiffe_id, "trust_domain", self.trust_domain(spiffe_id.trust_domain))
        return self._one(spiffe_id)

    def selectors(self, selectors: tuple[Selector, ...]) -> tuple[Selector, ...]:
        """The held tuple equal to ``selectors``, made of held selectors."""
        found = self._known.get(selectors)
        if found is not None:
            return found  # type: ignore[return-value]
        return self._one(tuple(self._one(selector) for selector in selectors))

    def share(self, entry: RegistrationEntry) -> RegistrationEntry:
        """``entry``, its parent ID, selectors and SPIFFE ID's trust domain made the held ones
        (in place: each is replaced by an equal immutable value, which no holder of the entry
        can tell apart, and which costs a fraction of building a new entry). The SPIFFE ID is
        usually the entry's own, so it is not remembered unless it is some entry's parent."""
        _share_field(entry, "parent_id", self.spiffe_id(entry.parent_id))
        _share_field(entry, "selectors", self.selectors(entry.selectors))
        spiffe_id = entry.spiffe_id
        known = self._known.get(spiffe_id)
        if known is not None:
            _share_field(entry, "spiffe_id", known)
        else:
            _share_field(spiffe_id, "trust_domain", self.trust_domain(spiffe_id.trust_domain))
        return entry


def _share_field(owner: object, name: str, value: object) -> None:
    """Replace ``owner.name`` (a frozen dataclass's field) with ``value``, an equal object."""
    if getattr(owner, name) is not value:
        object.__setattr__(owner, name, value)
