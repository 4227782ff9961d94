"""Following the upstream authority's trust material, as SPIRE's CA manager does.

An upstream authority whose roots or JWT keys change (a nested server's upstream rotating its
CA, another downstream server publishing its JWT key) says so through
``subscribe_to_bundle_updates``. Each update is appended to our trust domain's bundle
(``append_bundle``: authorities we lack are added, none removed), so workloads trust the new
upstream roots and validate JWT-SVIDs signed anywhere in the tree before they are met. A
subscription that ends at once without an update means the upstream has none to give (``disk``)
and the service ends; one that fails is subscribed again after the bundle delivery backoff.
"""

from __future__ import annotations

__all__ = ["UpstreamBundleFollower"]

import structlog

from pyspire.server.bundle_feed import BUNDLE_DELIVERY_RETRY
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PyspireError
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority, UpstreamBundle
from pyspire_sdk.spiffeid import TrustDomain

_log = structlog.get_logger("pyspire.server.upstream_bundle")


class UpstreamBundleFollower:
    """The service that appends the upstream's updates to our bundle; see the module."""

    def __init__(
        self,
        upstream: UpstreamAuthority,
        datastore: DataStore,
        trust_domain: TrustDomain,
        clock: Clock,
        retry: BackoffPolicy = BUNDLE_DELIVERY_RETRY,
    ) -> None:
        self._upstream = upstream
        self._datastore = datastore
        self._trust_domain = trust_domain
        self._clock = clock
        self._backoff = Backoff(retry)

    async def run(self) -> None:
        """Follow until cancelled, or return when the upstream gives no updates."""
        while True:
            try:
                delivered = await self._follow()
            except PyspireError as error:
                _log.warning("upstream bundle subscription failed", error=str(error))
            else:
                if not delivered:
                    return
            await self._clock.sleep(self._backoff.failed())

    async def _follow(self) -> bool:
        """One subscription; whether it delivered anything."""
        updates = self._upstream.subscribe_to_bundle_updates()
        delivered = False
        try:
            async for update in updates:
                await self._append(update)
                delivered = True
                self._backoff.succeeded()
        finally:
            aclose = getattr(updates, "aclose", None)
            if aclose is not None:
                await aclose()
        return delivered

    async def _append(self, update: UpstreamBundle) -> None:
        stored = await self._datastore.append_bundle(
            Bundle(
                trust_domain=self._trust_domain,
                x509_authorities=tuple(X509Authority(der=der) for der in update.x509_roots),
                jwt_authorities=update.jwt_authorities,
            )
        )
        _log.info(
            "upstream bundle appended",
            x509_roots=len(update.x509_roots),
            jwt_authorities=len(update.jwt_authorities),
            sequence_number=stored.sequence_number,
        )
