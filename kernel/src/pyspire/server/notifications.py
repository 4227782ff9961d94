"""Telling the configured notifiers about the trust bundle, with SPIRE's semantics.

- **Bundle loaded.** At start, once the CA has made or loaded the bundle and before the server
  opens its listeners, every notifier is told :class:`~pyspire_sdk.plugins.notifier.BundleLoaded`
  through ``notify_and_advise``, one after another in configured order. A notifier that raises
  vetoes the start: the server refuses to start with :class:`NotifierVetoError` naming it and
  its reason (SPIRE's "notify and advise").
- **Bundle updated.** After every change of the bundle (see :mod:`pyspire.server.bundle_feed`)
  each notifier is told :class:`~pyspire_sdk.plugins.notifier.BundleUpdated` through
  ``notify``, by a task of its own, so one slow or failing notifier never delays another. A
  failure is logged and counted, and retried after the delay :data:`BUNDLE_DELIVERY_RETRY`
  gives. A notifier is never called concurrently with itself and sees bundles in the order they
  happened; one that is behind (busy or failing) is told the newest bundle next and skips those
  it missed in between (each event carries the whole bundle).
"""

from __future__ import annotations

__all__ = ["BundleNotifications", "NotifierVetoError"]

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import structlog

from pyspire.catalog import NamedPlugin
from pyspire.server.bundle_feed import BUNDLE_DELIVERY_RETRY
from pyspire.telemetry.metrics import NOTIFIER_NOTIFIED
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import Metrics
from pyspire_sdk.plugins.notifier import BundleLoaded, BundleUpdated, Notifier


class NotifierVetoError(PluginError):
    """A notifier refused the bundle the server loaded at start: the server does not start."""


@dataclass
class _Mailbox:
    """The newest bundle one notifier has not been told of yet."""

    notifier: NamedPlugin[Notifier]
    pending: Bundle | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, bundle: Bundle) -> None:
        self.pending = bundle
        self.arrived.set()

    def take(self) -> Bundle | None:
        bundle, self.pending = self.pending, None
        self.arrived.clear()
        return bundle


class BundleNotifications:
    """The configured notifiers, told of the bundle at start and after every change."""

    def __init__(
        self,
        notifiers: Sequence[NamedPlugin[Notifier]],
        *,
        clock: Clock,
        metrics: Metrics,
        retry: BackoffPolicy = BUNDLE_DELIVERY_RETRY,
    ) -> None:
        self._mailboxes = [_Mailbox(notifier) for notifier in notifiers]
        self._clock = clock
        self._metrics = metrics
        self._retry = retry
        self._log = structlog.get_logger("pyspire.server.notifications")

    async def bundle_loaded(self, bundle: Bundle) -> None:
        """Tell every notifier, in order, the bundle the server starts with; the first that
        refuses stops the start with :class:`NotifierVetoError`."""
        event = BundleLoaded(bundle)
        for mailbox in self._mailboxes:
            name = mailbox.notifier.name
            try:
                await mailbox.notifier.instance.notify_and_advise(event)
            except Exception as error:
                self._count(name, "bundle_loaded", "error")
                raise NotifierVetoError(
                    f'notifier "{name}" refused the trust bundle loaded at start: '
                    f"{error or type(error).__name__}"
                ) from error
            self._count(name, "bundle_loaded", "ok")
            self._log.debug("notifier told bundle loaded", notifier=name)

    def bundle_updated(self, bundle: Bundle) -> None:
        """Queue ``bundle`` for every notifier (a :data:`~pyspire.server.bundle_feed.
        BundleListener`); each is told by its own task in :meth:`run`."""
        for mailbox in self._mailboxes:
            mailbox.put(bundle)

    async def run(self) -> None:
        """Deliver updates to every notifier until cancelled."""
        async with anyio.create_task_group() as group:
            for mailbox in self._mailboxes:
                group.start_soon(self._deliver, mailbox, name=f"notifier-{mailbox.notifier.name}")

    async def _deliver(self, mailbox: _Mailbox) -> None:
        name = mailbox.notifier.name
        notifier = mailbox.notifier.instance
        backoff = Backoff(self._retry)
        while True:
            await mailbox.arrived.wait()
            bundle = mailbox.take()
            while bundle is not None:
                try:
                    await notifier.notify(BundleUpdated(bundle))
                except Exception as error:
                    delay = backoff.failed()
                    self._count(name, "bundle_updated", "error")
                    self._log.warning(
                        "notifier failed on bundle update",
                        notifier=name,
                        sequence_number=bundle.sequence_number,
                        error=str(error) or type(error).__name__,
                        retry_in=round(delay, 3),
                    )
                    await self._clock.sleep(delay)
                    bundle = mailbox.take() or bundle
                    continue
                backoff.succeeded()
                self._count(name, "bundle_updated", "ok")
                self._log.debug(
                    "notifier told bundle updated",
                    notifier=name,
                    sequence_number=bundle.sequence_number,
                )
                bundle = None

    def _count(self, name: str, event: str, status: str) -> None:
        self._metrics.increment(NOTIFIER_NOTIFIED, notifier=name, event=event, status=status)
