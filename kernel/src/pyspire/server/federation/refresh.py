"""Keeping the bundles of federated trust domains current: each fetched from its bundle
endpoint on the refresh hint it carries, and stored as that trust domain's bundle.

One loop owns every fetch: it reads the relationships (the datastore's, which the static ones of
the configuration are written into at start), fetches those that are due side by side in one
task group, and sleeps until the next is due or until it is woken (a relationship created or a
refresh asked for through the TrustDomain API). A fetch that fails, or a bundle refused by the
standard's checks, leaves the stored bundle as it was and is retried by the one backoff policy,
never later than the next regular refresh. Refresh intervals are bounded: never more often than
once a minute (as SPIRE), never less than once a day.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_REFRESH",
    "FETCH_RETRY",
    "MAX_REFRESH",
    "MIN_REFRESH",
    "FederatedBundles",
    "refresh_interval",
]

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta

import anyio
import structlog

from pyspire.server.federation.fetch import BundleFetcher
from pyspire.waiting import sleep_or_wake
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import AlreadyExistsError, PyspireError
from pyspire_sdk.model import FederationRelationship
from pyspire_sdk.plugins.datastore import DataStore, Page
from pyspire_sdk.spiffeid import TrustDomain

DEFAULT_REFRESH = timedelta(minutes=5)
"""How often a bundle without a refresh hint is fetched (the standard's suggestion)."""
MIN_REFRESH = timedelta(minutes=1)
MAX_REFRESH = timedelta(days=1)
RELIST = timedelta(seconds=30)
"""How often the relationships are read again (changes through this server wake the loop)."""
FETCH_RETRY = BackoffPolicy(initial=5.0, maximum=300.0)
"""How a failed fetch is retried: 5 s, 10 s, 20 s, ... at most 5 minutes."""

_log = structlog.get_logger("pyspire.server.federation")


def refresh_interval(bundle: Bundle) -> timedelta:
    """When to fetch again after ``bundle``: its refresh hint, bounded."""
    hint = timedelta(seconds=bundle.refresh_hint) if bundle.refresh_hint else DEFAULT_REFRESH
    return min(max(hint, MIN_REFRESH), MAX_REFRESH)


class FederatedBundles:
    """The refresh loop of every federated bundle this server keeps."""

    def __init__(self, datastore: DataStore, clock: Clock, fetcher: BundleFetcher) -> None:
        self._datastore = datastore
        self._clock = clock
        self._fetcher = fetcher
        self._wake = asyncio.Event()
        self._due: dict[TrustDomain, datetime] = {}
        self._backoffs: dict[TrustDomain, Backoff] = {}

    async def store_static(self, relationships: Iterable[FederationRelationship]) -> None:
        """Write the configuration's relationships to the datastore: they win over stored
        ones of the same trust domain (SPIRE: static overrides dynamic)."""
        for relationship in relationships:
            try:
                await self._datastore.create_federation_relationship(relationship)
            except AlreadyExistsError:
                await self._datastore.update_federation_relationship(relationship)

    def refresh_soon(self, trust_domain: TrustDomain | None = None) -> None:
        """Fetch ``trust_domain``'s bundle now (every relationship read again when None)."""
        if trust_domain is not None:
            self._due[trust_domain] = self._clock.now()
        self._wake.set()

    async def refresh(self, relationship: FederationRelationship) -> Bundle:
        """Fetch and store one bundle now; raises what made it fail (nothing stored then)."""
        trust_domain = relationship.trust_domain
        current = await self._datastore.get_bundle(trust_domain)
        fetched = await self._fetcher.fetch(relationship, current)
        if fetched != current:
            await self._datastore.set_bundle(fetched)
            _log.info(
                "federated bundle updated",
                trust_domain=str(trust_domain),
                sequence_number=fetched.sequence_number,
            )
        self._due[trust_domain] = self._clock.now() + refresh_interval(fetched)
        self._backoffs.pop(trust_domain, None)
        return fetched

    async def _refresh_or_retry(self, relationship: FederationRelationship) -> None:
        trust_domain = relationship.trust_domain
        try:
            await self.refresh(relationship)
        except PyspireError as error:
            backoff = self._backoffs.setdefault(trust_domain, Backoff(FETCH_RETRY))
            retry_in = min(backoff.failed(), DEFAULT_REFRESH.total_seconds())
            self._due[trust_domain] = self._clock.now() + timedelta(seconds=retry_in)
            _log.warning(
                "federated bundle not refreshed, the stored one kept",
                trust_domain=str(trust_domain),
                error=str(error),
                retry_in=round(retry_in, 3),
            )

    async def _relationships(self) -> list[FederationRelationship]:
        page = await self._datastore.list_federation_relationships(Page())
        return list(page.relationships)

    async def refresh_due(self) -> float:
        """Fetch every bundle that is due; the seconds until the next one is."""
        relationships = await self._relationships()
        now = self._clock.now()
        known = {relationship.trust_domain for relationship in relationships}
        for forgotten in set(self._due) - known:
            del self._due[forgotten]
            self._backoffs.pop(forgotten, None)
        due = [r for r in relationships if self._due.get(r.trust_domain, now) <= now]
        async with anyio.create_task_group() as group:
            for relationship in due:
                group.start_soon(self._refresh_or_retry, relationship)
        after = self._clock.now()
        waits = [(moment - after).total_seconds() for moment in self._due.values()]
        return max(0.0, min([RELIST.total_seconds(), *waits]))

    async def run(self) -> None:
        """Refresh bundles as they fall due until cancelled."""
        while True:
            self._wake.clear()
            try:
                wait = await self.refresh_due()
            except PyspireError as error:
                _log.error("federation relationships not read", error=str(error))
                wait = RELIST.total_seconds()
            await sleep_or_wake(self._clock, wait, self._wake)
