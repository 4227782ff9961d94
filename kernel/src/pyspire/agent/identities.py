"""What the Workload API needs from the agent's cache, and nothing more.

The sync manager keeps registration entries, workload X509-SVIDs (with their private keys,
generated on this node) and trust bundles current; the Workload API reads them through
:class:`IdentitySource` to answer a workload whose selectors it has just attested. Keeping this
seam narrow lets each side be tested without the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain

MATCH_MEMO_SIZE = 1024
"""Distinct selector sets whose matches are remembered at once (about one per kind of
workload); past that the memory starts over."""


def entitled(entry: RegistrationEntry, selectors: frozenset[Selector]) -> bool:
    """Whether a workload with ``selectors`` may have ``entry``'s identity: every selector of
    the entry is among the workload's (SPIRE's subset match)."""
    return all(selector in selectors for selector in entry.selectors)


@dataclass(frozen=True)
class Identity:
    """One identity the agent can hand out: the entry and its current X509-SVID.

    ``svid.private_key`` is the PKCS#8 DER key that never left this node.
    """

    entry: RegistrationEntry
    svid: X509Svid


@dataclass(frozen=True)
class CallerView:
    """What one caller (one set of selectors) is entitled to in a snapshot.

    ``entries`` are every authorized entry whose selectors are all among the caller's, oldest
    first; ``identities`` those of them that hold a valid X509-SVID now; ``missing`` those that
    do not (yet, or any more).
    """

    entries: tuple[RegistrationEntry, ...]
    identities: tuple[Identity, ...]

    @property
    def missing(self) -> tuple[RegistrationEntry, ...]:
        held = {identity.entry.id for identity in self.identities}
        return tuple(entry for entry in self.entries if entry.id not in held)

    @property
    def complete(self) -> bool:
        """Whether every entry the caller is entitled to holds an X509-SVID."""
        return len(self.identities) == len(self.entries)


@dataclass(frozen=True)
class Snapshot:
    """Everything the Workload API streams, at one revision of the cache.

    ``revision`` increases whenever anything here changes (an SVID rotated, expired or was
    issued, an entry or bundle changed, the server was lost or regained), so a stream can tell
    whether to send again. ``identities`` hold only SVIDs that have not expired.

    ``entries`` are every authorized entry, oldest first, whether or not it holds an SVID
    (``None``: exactly the identities' entries). ``synced`` says whether the agent knows its
    entries at all (from a sync, or from what it persisted before a restart): before that, a
    caller without identities may still be entitled to some. ``server_away`` says whether the
    last attempt to reach the server failed, so a missing SVID will not come soon.
    """

    revision: int
    identities: tuple[Identity, ...]
    bundle: Bundle | None
    federated_bundles: Mapping[TrustDomain, Bundle]
    entries: tuple[RegistrationEntry, ...] | None = None
    synced: bool = True
    server_away: bool = False
    _views: dict[frozenset[Selector], CallerView] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def matching(self, selectors: frozenset[Selector]) -> tuple[Identity, ...]:
        """Identities whose entry selectors are all among ``selectors`` (subset match), oldest
        entry first so that, among identities sharing a hint, the oldest wins."""
        return self.view(selectors).identities

    def settled(self, selectors: frozenset[Selector]) -> bool:
        """Whether a caller's first answer should wait no longer: every X509-SVID it is
        entitled to is there, or the server is away (so they could not come)."""
        return self.server_away or (self.synced and self.view(selectors).complete)

    def view(self, selectors: frozenset[Selector]) -> CallerView:
        """What a caller with ``selectors`` is entitled to; computed once per selector set."""
        found = self._views.get(selectors)
        if found is None:
            found = self._build_view(selectors)
            if len(self._views) >= MATCH_MEMO_SIZE:
                self._views.clear()
            self._views[selectors] = found
        return found

    def _build_view(self, selectors: frozenset[Selector]) -> CallerView:
        identities = sorted(
            (identity for identity in self.identities if entitled(identity.entry, selectors)),
            key=lambda identity: entry_age(identity.entry),
        )
        if self.entries is None:
            entries = [identity.entry for identity in identities]
        else:
            entries = sorted(
                (entry for entry in self.entries if entitled(entry, selectors)), key=entry_age
            )
        return CallerView(entries=tuple(entries), identities=tuple(identities))


def entry_age(entry: RegistrationEntry) -> tuple[float, str]:
    """The order entries are listed in: oldest first (creation time, then ID)."""
    created = entry.created_at
    return (created.timestamp() if created else 0.0, entry.id)


class IdentitySource(Protocol):
    """The agent cache as the Workload API sees it."""

    def snapshot(self) -> Snapshot:
        """The current state; cheap (no I/O), safe to call on every request."""
        ...

    def watch(self) -> AsyncIterator[Snapshot]:
        """Yield the current snapshot at once, then a new one after every change, until the
        caller stops iterating. Slow consumers may skip intermediate snapshots."""
        ...

    def demand(self, selectors: frozenset[Selector]) -> AbstractContextManager[None]:
        """Keep the X509-SVIDs of a caller with ``selectors`` wanted while the block runs:
        the missing ones are minted as soon as possible (beyond any cache bound), and the held
        ones are not evicted."""
        ...

    async def fetch_jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        """A JWT-SVID for ``entry`` and exactly these audiences: cached per (entry, audiences)
        until half its lifetime has passed, otherwise minted by the server. Raises
        :class:`~pyspire_sdk.errors.UnavailableError` when the server cannot be reached."""
        ...
