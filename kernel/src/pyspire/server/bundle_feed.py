"""The server's own trust bundle as a feed of changes, for notifiers and bundle publishers.

Who must hear of every change of the trust bundle subscribes to a :class:`BundleFeed`, which
tells them the new bundle after each change. It learns of changes two ways, as SPIRE does:

- **Writes through this server.** The datastore handed to the CA manager and the APIs is
  wrapped by :func:`watch_bundle_writes`, so every write to our bundle (a CA prepared, an
  expired authority pruned, an authority appended by an administrator) wakes the feed at once.
- **Everything else.** Every :data:`BUNDLE_REFRESH` the feed reads the bundle again, so a change
  made by another server sharing the datastore is seen within that time.
- **A peer this server cannot verify.** An agent attested through another server sharing the
  datastore holds an SVID of that server's CA, which this server trusts only once it has read
  the bundle since that CA was added: a datastore that tells of changes (PostgreSQL, MySQL)
  wakes the feed at once, but on one SQLite file nothing does, and the agent's connection
  would break after its TLS handshake (TLS 1.3: the client sends its request before the
  server's verdict) until the next refresh. So a client certificate that failed verification
  wakes the feed too (:meth:`BundleFeed.unverified_peer`), at most once per
  :data:`UNVERIFIED_PEER_RECHECK`: whoever presents certificates we do not trust costs a
  bundle read a second at most.

The feed reads the stored bundle after being woken and tells subscribers only when it differs
from the last one it told: a write that changed nothing is not an event. Subscribers are
synchronous and must not block (they hand the bundle to their own tasks).
"""

from __future__ import annotations

__all__ = [
    "BUNDLE_DELIVERY_RETRY",
    "BUNDLE_REFRESH",
    "UNVERIFIED_PEER_RECHECK",
    "BundleFeed",
    "BundleListener",
    "watch_bundle_writes",
]

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from pyspire.waiting import sleep_or_wake
from pyspire_sdk.backoff import BackoffPolicy
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import NotFoundError, PyspireError
from pyspire_sdk.plugins.datastore import BundleDeleteMode, DataStore
from pyspire_sdk.spiffeid import TrustDomain

BUNDLE_REFRESH = timedelta(seconds=30)
"""How often the bundle is read again to catch changes no write through this server announced."""

UNVERIFIED_PEER_RECHECK = timedelta(seconds=1)
"""The shortest time between two reads of the bundle woken by client certificates that failed
verification (:meth:`BundleFeed.unverified_peer`)."""

BUNDLE_DELIVERY_RETRY = BackoffPolicy(initial=1.0, maximum=60.0)
"""How a notifier or bundle publisher that failed is retried: 1 s, 2 s, 4 s, ... at most 60 s."""

BundleListener = Callable[[Bundle], None]
"""Told the new bundle after each change; must return at once."""


class BundleFeed:
    """Tells subscribers of every change of one trust domain's bundle in the datastore."""

    def __init__(
        self,
        datastore: DataStore,
        trust_domain: TrustDomain,
        clock: Clock,
        *,
        refresh: timedelta = BUNDLE_REFRESH,
    ) -> None:
        self._datastore = datastore
        self._trust_domain = trust_domain
        self._clock = clock
        self._refresh = refresh
        self._listeners: list[BundleListener] = []
        self._current: Bundle | None = None
        self._woken = asyncio.Event()
        self._next_unverified_recheck: datetime | None = None
        self._log = structlog.get_logger("pyspire.server.bundle_feed")

    @property
    def current(self) -> Bundle | None:
        """The bundle subscribers were last told of (or that :meth:`load` read)."""
        return self._current

    def subscribe(self, listener: BundleListener) -> None:
        """Tell ``listener`` of every change from now on."""
        self._listeners.append(listener)

    def wake(self) -> None:
        """Something may have changed the bundle: read it again now (safe from any code on
        the event loop; the reading happens in :meth:`run`)."""
        self._woken.set()

    def unverified_peer(self) -> None:
        """A peer presented a certificate the trust anchors did not verify: it may be signed by
        a CA another server sharing the datastore added since the last read, so read the bundle
        again now, unless such a peer already woke the feed less than
        :data:`UNVERIFIED_PEER_RECHECK` ago."""
        now = self._clock.now()
        if self._next_unverified_recheck is not None and now < self._next_unverified_recheck:
            return
        self._next_unverified_recheck = now + UNVERIFIED_PEER_RECHECK
        self._woken.set()

    async def load(self) -> Bundle:
        """Read the bundle as it is now and take it as the one everyone knows (the bundle the
        server starts with); :class:`~pyspire_sdk.errors.NotFoundError` when there is none."""
        bundle = await self._datastore.get_bundle(self._trust_domain)
        if bundle is None:
            raise NotFoundError(f"no trust bundle stored for {self._trust_domain}")
        self._current = bundle
        return bundle

    async def run(self) -> None:
        """Read the bundle whenever woken, and at the latest a refresh interval after the last
        read, until cancelled."""
        while True:
            await sleep_or_wake(self._clock, self._refresh.total_seconds(), self._woken)
            self._woken.clear()
            await self._check()

    async def _check(self) -> None:
        try:
            bundle = await self._datastore.get_bundle(self._trust_domain)
        except PyspireError as error:
            self._log.warning("trust bundle not read", error=str(error))
            return
        if bundle is None or bundle == self._current:
            return
        self._current = bundle
        self._log.info("trust bundle changed", sequence_number=bundle.sequence_number)
        for listener in list(self._listeners):
            listener(bundle)


class _BundleWatchingDataStore:
    """A datastore that calls ``on_write`` after every successful write to one trust domain's
    bundle, and is otherwise the datastore it wraps (SPIRE wraps its datastore the same way to
    tell bundle publishers)."""

    def __init__(
        self, datastore: DataStore, trust_domain: TrustDomain, on_write: Callable[[], None]
    ) -> None:
        self._datastore = datastore
        self._trust_domain = trust_domain
        self._on_write = on_write

    def __getattr__(self, name: str) -> Any:
        # Everything but the bundle writes below is the wrapped datastore's; bound once, so
        # later lookups cost what they cost on the datastore itself.
        attribute = getattr(self._datastore, name)
        setattr(self, name, attribute)
        return attribute

    def _wrote(self, trust_domain: TrustDomain) -> None:
        if trust_domain == self._trust_domain:
            self._on_write()

    async def create_bundle(self, bundle: Bundle) -> Bundle:
        stored = await self._datastore.create_bundle(bundle)
        self._wrote(bundle.trust_domain)
        return stored

    async def set_bundle(self, bundle: Bundle) -> Bundle:
        stored = await self._datastore.set_bundle(bundle)
        self._wrote(bundle.trust_domain)
        return stored

    async def update_bundle(
        self, trust_domain: TrustDomain, mutate: Callable[[Bundle | None], Bundle]
    ) -> Bundle:
        stored = await self._datastore.update_bundle(trust_domain, mutate)
        self._wrote(trust_domain)
        return stored

    async def append_bundle(self, bundle: Bundle) -> Bundle:
        stored = await self._datastore.append_bundle(bundle)
        self._wrote(bundle.trust_domain)
        return stored

    async def delete_bundle(
        self, trust_domain: TrustDomain, mode: BundleDeleteMode = BundleDeleteMode.RESTRICT
    ) -> None:
        await self._datastore.delete_bundle(trust_domain, mode)
        self._wrote(trust_domain)

    async def prune_bundle(self, trust_domain: TrustDomain, expires_before: datetime) -> bool:
        changed = await self._datastore.prune_bundle(trust_domain, expires_before)
        if changed:
            self._wrote(trust_domain)
        return changed


def watch_bundle_writes(
    datastore: DataStore, trust_domain: TrustDomain, on_write: Callable[[], None]
) -> DataStore:
    """``datastore``, calling ``on_write`` after every successful write to ``trust_domain``'s
    bundle made through it."""
    watching: DataStore = _BundleWatchingDataStore(datastore, trust_domain, on_write)
    return watching
