"""What the Workload API needs from the agent's cache, and nothing more.

The sync manager keeps registration entries, workload X509-SVIDs (with their private keys,
generated on this node) and trust bundles current; the Workload API reads them through
:class:`IdentitySource` to answer a workload whose selectors it has just attested. Keeping this
seam narrow lets each side be tested without the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain


@dataclass(frozen=True)
class Identity:
    """One identity the agent can hand out: the entry and its current X509-SVID.

    ``svid.private_key`` is the PKCS#8 DER key that never left this node.
    """

    entry: RegistrationEntry
    svid: X509Svid


@dataclass(frozen=True)
class Snapshot:
    """Everything the Workload API streams, at one revision of the cache.

    ``revision`` increases whenever anything here changes (an SVID rotated, an entry or bundle
    changed), so a stream can tell whether to send again.
    """

    revision: int
    identities: tuple[Identity, ...]
    bundle: Bundle | None
    federated_bundles: Mapping[TrustDomain, Bundle]

    def matching(self, selectors: frozenset[Selector]) -> tuple[Identity, ...]:
        """Identities whose entry selectors are all among ``selectors`` (subset match), oldest
        entry first so that, among identities sharing a hint, the oldest wins."""
        found = [
            identity
            for identity in self.identities
            if all(selector in selectors for selector in identity.entry.selectors)
        ]
        found.sort(key=_age)
        return tuple(found)


def _age(identity: Identity) -> tuple[float, str]:
    created = identity.entry.created_at
    return (created.timestamp() if created else 0.0, identity.entry.id)


class IdentitySource(Protocol):
    """The agent cache as the Workload API sees it."""

    def snapshot(self) -> Snapshot:
        """The current state; cheap (no I/O), safe to call on every request."""
        ...

    def watch(self) -> AsyncIterator[Snapshot]:
        """Yield the current snapshot at once, then a new one after every change, until the
        caller stops iterating. Slow consumers may skip intermediate snapshots."""
        ...

    async def fetch_jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        """A JWT-SVID for ``entry`` and exactly these audiences: cached per (entry, audiences)
        until half its lifetime has passed, otherwise minted by the server. Raises
        :class:`~pyspire_sdk.errors.UnavailableError` when the server cannot be reached."""
        ...
