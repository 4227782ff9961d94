"""Publishing the trust bundle through the configured bundle publishers.

Every publisher is given the current bundle at start and after every change of it (see
:mod:`pyspire.server.bundle_feed`, whose periodic re-read of the datastore is also the periodic
refresh: a change no write through this server announced is published within
:data:`~pyspire.server.bundle_feed.BUNDLE_REFRESH`). Each publisher has a task of its own, so
one slow or unreachable destination never delays another, and:

- calls for one publisher never overlap;
- the bundle it last published successfully is remembered (a
  :class:`~pyspire_sdk.plugins.bundle_publisher.PublishedBundleMemo` per publisher), and an
  unchanged bundle is not published again;
- a failure is logged and counted and retried after the delay
  :data:`~pyspire.server.bundle_feed.BUNDLE_DELIVERY_RETRY` gives; the retry publishes the
  newest bundle, never an older one after a newer.
"""

from __future__ import annotations

__all__ = ["BundlePublishing"]

import asyncio
from collections.abc import Sequence

import anyio
import structlog

from pyspire.catalog import NamedPlugin
from pyspire.server.bundle_feed import BUNDLE_DELIVERY_RETRY
from pyspire.telemetry.metrics import BUNDLE_PUBLISHED
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.plugin import Metrics
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher, PublishedBundleMemo


class BundlePublishing:
    """The configured bundle publishers, each kept publishing the newest bundle."""

    def __init__(
        self,
        publishers: Sequence[NamedPlugin[BundlePublisher]],
        *,
        clock: Clock,
        metrics: Metrics,
        retry: BackoffPolicy = BUNDLE_DELIVERY_RETRY,
    ) -> None:
        self._publishers = tuple(publishers)
        self._clock = clock
        self._metrics = metrics
        self._retry = retry
        self._latest: Bundle | None = None
        self._offered = [asyncio.Event() for _ in self._publishers]
        self._log = structlog.get_logger("pyspire.server.publishing")

    def offer(self, bundle: Bundle) -> None:
        """Make ``bundle`` the one to publish (a :data:`~pyspire.server.bundle_feed.
        BundleListener`); each publisher's task takes it up in :meth:`run`."""
        self._latest = bundle
        for offered in self._offered:
            offered.set()

    async def run(self) -> None:
        """Publish every offered bundle through every publisher until cancelled."""
        async with anyio.create_task_group() as group:
            for publisher, offered in zip(self._publishers, self._offered, strict=True):
                group.start_soon(
                    self._publish, publisher, offered, name=f"publisher-{publisher.name}"
                )

    async def _publish(
        self, publisher: NamedPlugin[BundlePublisher], offered: asyncio.Event
    ) -> None:
        memo = PublishedBundleMemo()
        backoff = Backoff(self._retry)
        while True:
            await offered.wait()
            offered.clear()
            bundle = self._latest
            while bundle is not None:
                published = False
                try:
                    async with memo.publishing(bundle) as changed:
                        if changed:
                            await publisher.instance.publish_bundle(bundle)
                            published = True
                except Exception as error:
                    delay = backoff.failed()
                    self._count(publisher.name, "error")
                    self._log.warning(
                        "bundle not published",
                        publisher=publisher.name,
                        sequence_number=bundle.sequence_number,
                        error=str(error) or type(error).__name__,
                        retry_in=round(delay, 3),
                    )
                    await self._clock.sleep(delay)
                    offered.clear()
                    bundle = self._latest
                    continue
                backoff.succeeded()
                if published:
                    self._count(publisher.name, "ok")
                    self._log.info(
                        "bundle published",
                        publisher=publisher.name,
                        sequence_number=bundle.sequence_number,
                    )
                bundle = None

    def _count(self, name: str, status: str) -> None:
        self._metrics.increment(BUNDLE_PUBLISHED, publisher=name, status=status)
