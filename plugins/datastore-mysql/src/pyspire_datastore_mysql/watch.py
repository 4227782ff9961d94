"""Hearing of changes made through other servers: MySQL has no ``LISTEN``/``NOTIFY``, so the
watch polls.

Every ``events_poll_interval`` (host clock) the watch reads two one-row counters in one query:
``change_event_counter.last_event_id``, raised by every transaction that appends change events,
and ``bundle_changes.generation``, raised by every transaction that writes or deletes a bundle
(see :mod:`pyspire_datastore_mysql.store`). When either moved since the last poll, the listener
is told :attr:`~pyspire_sdk.plugins.datastore.ChangeSignal.CHANGED`. A poll that fails (the
database restarted, the network is down) is retried under the one backoff policy, and the
listener is told :attr:`~pyspire_sdk.plugins.datastore.ChangeSignal.RESYNC` once polls succeed
again: events may have been appended and pruned meanwhile, so the server reloads in full.
"""

from __future__ import annotations

__all__ = ["WATCH_RETRY", "ChangeWatch"]

from collections.abc import Awaitable, Callable

import structlog

from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import PyspireError
from pyspire_sdk.plugins.datastore import ChangeListener, ChangeSignal

WATCH_RETRY = BackoffPolicy(initial=0.5, maximum=30.0)
"""How failed polls are retried: 0.5 s, 1 s, 2 s, ... at most 30 s."""

Counters = tuple[int, int]
"""The last change event id and the bundles' write generation."""


class ChangeWatch:
    """Polls the counters with ``poll``; see :meth:`run`."""

    def __init__(
        self,
        poll: Callable[[], Awaitable[Counters]],
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        interval: float,
        *,
        retry: BackoffPolicy = WATCH_RETRY,
    ) -> None:
        self._poll = poll
        self._clock = clock
        self._logger = logger
        self._interval = interval
        self._retry = retry

    async def run(self, listener: ChangeListener) -> None:
        """Signal ``listener`` until cancelled (the contract of
        :meth:`~pyspire_sdk.plugins.datastore.WatchableDataStore.watch_changes`): ``CHANGED``
        at the first successful poll and whenever a counter moved, ``RESYNC`` at the first
        successful poll after failed ones."""
        backoff = Backoff(self._retry)
        seen: Counters | None = None
        while True:
            try:
                counters = await self._poll()
            except PyspireError as error:
                delay = backoff.failed()
                if backoff.failures == 1:
                    self._logger.warning(
                        "change polling unavailable", error=str(error), retry_in=delay
                    )
                await self._clock.sleep(delay)
                continue
            if backoff.failures:
                self._logger.info("change polling restored")
                listener(ChangeSignal.RESYNC if seen is not None else ChangeSignal.CHANGED)
                backoff.succeeded()
            elif counters != seen:
                listener(ChangeSignal.CHANGED)
            seen = counters
            await self._clock.sleep(self._interval)
