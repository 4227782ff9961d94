"""Following the upstream authority's trust material, as SPIRE's CA manager does.

An upstream authority whose roots or JWT keys change (a nested server's upstream rotating its
CA, another downstream server publishing its JWT key) says so through
``subscribe_to_bundle_updates``. Each update is appended to our trust domain's bundle
(``append_bundle``: authorities we lack are added, none removed), so workloads trust the new
upstream roots and validate JWT-SVIDs signed anywhere in the tree before they are met. A
subscription that ends at once without an update means the upstream has none to give (``disk``)
and the service ends; one that fails is subscribed again after the bundle delivery backoff.

Taints travel down the same way (SPIRE's bundle updater). A root the upstream marks tainted
that our bundle holds untainted is handed to the CA (``on_tainted``,
:meth:`pyspire.ca.manager.CaManager.replace_tainted_upstream`), which replaces an active CA that
chains to it and then marks it tainted in our bundle, so our agents re-mint from the new CA and
the servers below us follow in turn. A root we lack arrives with its mark. A root our bundle
holds tainted that the upstream no longer lists was revoked upstream and is revoked here. When
acting on a taint fails, the subscription counts as failed and is taken again after the backoff;
its first update carries the taint again, since it is not marked here until it was acted on.
"""

from __future__ import annotations

__all__ = ["TaintedRoots", "UpstreamBundleFollower"]

from collections.abc import Awaitable, Callable, Sequence

import structlog

from pyspire.ca.tainting import revoke_x509_ca, subject_key_id
from pyspire.server.bundle_feed import BUNDLE_DELIVERY_RETRY
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PyspireError
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority, UpstreamBundle
from pyspire_sdk.spiffeid import TrustDomain

_log = structlog.get_logger("pyspire.server.upstream_bundle")

TaintedRoots = Callable[[Sequence[bytes]], Awaitable[object]]
"""Acts on upstream roots (DER) newly marked tainted upstream; see the module."""


class UpstreamBundleFollower:
    """The service that appends the upstream's updates to our bundle; see the module."""

    def __init__(
        self,
        upstream: UpstreamAuthority,
        datastore: DataStore,
        trust_domain: TrustDomain,
        clock: Clock,
        on_tainted: TaintedRoots,
        retry: BackoffPolicy = BUNDLE_DELIVERY_RETRY,
    ) -> None:
        self._on_tainted = on_tainted
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
        current = await self._datastore.get_bundle(self._trust_domain)
        held = {} if current is None else {a.der: a.tainted for a in current.x509_authorities}
        tainted = set(update.tainted_x509_roots)
        stored = await self._datastore.append_bundle(
            Bundle(
                trust_domain=self._trust_domain,
                x509_authorities=tuple(
                    X509Authority(der=der, tainted=der in tainted) for der in update.x509_roots
                ),
                jwt_authorities=update.jwt_authorities,
            )
        )
        _log.info(
            "upstream bundle appended",
            x509_roots=len(update.x509_roots),
            jwt_authorities=len(update.jwt_authorities),
            sequence_number=stored.sequence_number,
        )
        newly_tainted = [der for der in update.tainted_x509_roots if held.get(der) is False]
        if newly_tainted:
            _log.info("upstream x509 authorities tainted upstream", count=len(newly_tainted))
            await self._on_tainted(newly_tainted)
        listed = set(update.x509_roots)
        for der, was_tainted in held.items():
            if was_tainted and der not in listed:
                await self._revoke(der)

    async def _revoke(self, der: bytes) -> None:
        """Revoke a tainted root the upstream revoked; gone already is fine."""
        key_id = subject_key_id(der)
        try:
            await self._datastore.update_bundle(self._trust_domain, revoke_x509_ca(key_id))
        except (NotFoundError, InvalidArgumentError):
            return
        _log.info("upstream x509 authority revoked upstream", subject_key_id=key_id)
