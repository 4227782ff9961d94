"""The bundle answers an agent fetches at each sync, and the digest offered in their stead.

An agent asks at every sync for our bundle (GetBundle) and for the bundle of every trust domain
its entries federate with (GetFederatedBundle). :class:`BundleAnswers` keeps those answers
(:class:`~pyspire.server.api.own_bundle.KeptBundle`: each read again at most once a second) and
gives :meth:`BundleAnswers.digest`, the value of
:data:`~pyspire.proto.bundle_digest.BUNDLES_DIGEST_HEADER` that SyncAuthorizedEntries sends so
that an agent holding the same answers skips those calls. One instance per server, shared by the
Bundle service (which forgets what it writes) and the Entry service (which offers the digest).
"""

from __future__ import annotations

__all__ = ["MAX_FEDERATED", "BundleAnswers"]

from collections import OrderedDict
from collections.abc import Callable, Sequence

from pyspire.proto.bundle_digest import bundles_digest
from pyspire.server.api.own_bundle import KeptAnswer, KeptBundle, OwnBundleReply
from pyspire.server.context import ServerContext
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.spiffeid import TrustDomain

MAX_FEDERATED = 1024
"""How many federated trust domains' answers are kept at most (least recently used dropped)."""


class BundleAnswers:
    """Our bundle's answer and those of federated trust domains, kept; see the module
    documentation. ``encode`` writes a bundle as GetBundle and GetFederatedBundle answer it."""

    def __init__(self, context: ServerContext, encode: Callable[[Bundle], bytes]) -> None:
        self._context = context
        self._encode = encode
        self.own = OwnBundleReply(context, self._read_own, encode)
        """Our bundle's answer."""
        self._federated: OrderedDict[TrustDomain, KeptBundle] = OrderedDict()
        self._own_only: tuple[KeptAnswer, str] | None = None

    async def _read_own(self) -> Bundle | None:
        return await self._context.datastore.get_bundle(self._context.trust_domain)

    def federated(self, trust_domain: TrustDomain) -> KeptBundle:
        """The kept answer of a federated trust domain's bundle."""
        kept = self._federated.get(trust_domain)
        if kept is None:
            datastore = self._context.datastore

            async def read() -> Bundle | None:
                return await datastore.get_bundle(trust_domain)

            kept = self._federated[trust_domain] = KeptBundle(self._context, read, self._encode)
            if len(self._federated) > MAX_FEDERATED:
                self._federated.popitem(last=False)
        else:
            self._federated.move_to_end(trust_domain)
        return kept

    def forget_federated(self, trust_domain: TrustDomain) -> None:
        """Read a federated bundle again at its next use (this server just wrote it)."""
        kept = self._federated.get(trust_domain)
        if kept is not None:
            kept.forget()

    async def digest(self, federates_with: Sequence[TrustDomain]) -> str:
        """The digest of our bundle's answer and those of ``federates_with`` (the federated
        trust domains an agent's entries name, ours excluded)."""
        own = await self.own.answer()
        if not federates_with:
            # Most agents federate with nobody: one digest per answer of our bundle.
            seen = self._own_only
            if seen is None or seen[0] is not own:
                seen = self._own_only = (own, bundles_digest(own.digest, ()))
            return seen[1]
        federated = [
            (trust_domain.name, (await self.federated(trust_domain).answer()).digest)
            for trust_domain in federates_with
        ]
        return bundles_digest(own.digest, federated)
