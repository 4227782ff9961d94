"""The bundle answers the agent holds between syncs, and whether the server's digest says they
are still current.

A pyspire server offers, with its SyncAuthorizedEntries answer, the digest of the GetBundle and
GetFederatedBundle answers the agent would fetch next (:mod:`pyspire.proto.bundle_digest`).
:class:`HeldBundles` keeps the answers the agent last fetched, as bytes and as bundles, and
:meth:`HeldBundles.current` gives them back only when their digest, computed here over the very
bytes held, equals the one offered for the same trust domains. Any doubt (no offer, a trust
domain not held, another digest) means fetching: a held answer that another server or an older
read gave never passes for a current one. Sans-IO: no call, no clock.
"""

from __future__ import annotations

__all__ = ["HeldBundles"]

from collections.abc import Mapping, Sequence

from pyspire.agent.server_api import TrustBundles
from pyspire.proto.bundle_digest import answer_digest, bundles_digest
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.spiffeid import TrustDomain


class HeldBundles:
    """The last fetched bundle answers; see the module documentation."""

    def __init__(self) -> None:
        # (answer digest, bundle): our bundle, and each federated trust domain fetched.
        self._own: tuple[bytes, Bundle] | None = None
        self._federated: dict[TrustDomain, tuple[bytes, Bundle | None]] = {}

    def current(
        self, offered: str | None, federates_with: Sequence[TrustDomain]
    ) -> TrustBundles | None:
        """The held bundles when ``offered`` is the digest of what is held for our bundle and
        ``federates_with``; None when they must be fetched."""
        own = self._own
        if offered is None or own is None:
            return None
        held = self._federated
        if any(trust_domain not in held for trust_domain in federates_with):
            return None
        digest = bundles_digest(
            own[0], [(trust_domain.name, held[trust_domain][0]) for trust_domain in federates_with]
        )
        if digest != offered:
            return None
        federated = {
            trust_domain: bundle
            for trust_domain in federates_with
            if (bundle := held[trust_domain][1]) is not None
        }
        return TrustBundles(own[1], federated)

    def hold_own(self, own: tuple[bytes, Bundle]) -> None:
        """Hold a freshly fetched answer for our bundle alone (its encoding and bundle),
        keeping the federated answers held: a GetBundle outside a sync (the one that pins the
        bundle before attesting) then spares the first sync its own."""
        self._own = (answer_digest(own[0]), own[1])

    def hold(
        self,
        own: tuple[bytes, Bundle],
        federated: Mapping[TrustDomain, tuple[bytes | None, Bundle | None]],
    ) -> None:
        """Hold freshly fetched answers: our bundle's encoding and bundle, and for each
        federated trust domain fetched its answer's encoding and bundle (None, None: the
        server has none)."""
        self._own = (answer_digest(own[0]), own[1])
        self._federated = {
            trust_domain: (answer_digest(encoded), bundle)
            for trust_domain, (encoded, bundle) in federated.items()
        }
