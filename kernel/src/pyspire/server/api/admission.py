"""Admission control for agent attestation: a bounded number run at once, a bounded queue waits.

A storm of agents attesting at once (a fleet restarting, a new cluster) otherwise shares the
server's CPU among every call, so each call takes as long as the whole storm and passes the
agent's deadline; the agent retries, but the server finished the first attempt, so a one-time
join token is already consumed and the agent is refused for good. With admission, at most
``limit`` attestations run at once (each finishes in its own share of time), up to ``queue``
more wait their turn, and callers beyond that are told UNAVAILABLE at once, before anything is
read or consumed, so the agent's retry (the one backoff policy) succeeds later.

The admission also tells when a storm is over (:meth:`AttestationAdmission.quiet_since`): the
server freezes the heap the storm built then (:class:`pyspire.collector.SettledFreeze`).
"""

from __future__ import annotations

__all__ = ["ATTESTATION_CONCURRENCY", "ATTESTATION_QUEUE", "MIN_TIME_LEFT", "AttestationAdmission"]

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError

ATTESTATION_CONCURRENCY = 32
"""Attestations run at once. Enough to keep the CPU, the signer and the datastore busy while
some calls wait on their peer; few enough that each finishes in well under a second."""

ATTESTATION_QUEUE = 10_000
"""Attestations that may wait for a slot. Waiting costs the server next to nothing, while a
caller turned away comes back with new calls (GetBundle and AttestAgent; a new TLS handshake
too when its connection went): a storm of 1,000 turned away from a queue of 256 took four
times the CPU per agent. A waiter whose call deadline passes is cancelled by the RPC layer and
leaves the queue with nothing consumed; its agent retries. The agent gives AttestAgent 120 s
(``pyspire.agent.client.ATTESTATION_TIMEOUT``) so that it can wait here."""

MIN_TIME_LEFT = 10.0
"""Seconds of its deadline a call must still have when it gets its slot: an attestation that
starts later might be cut off after its join token was consumed, and the agent's retry would
find the token used. With 5 s, 15 of 1,000 agents in a storm still lost their token (the
agent's clock starts before its TLS handshake); with 10 s none did."""


class AttestationAdmission:
    """At most ``limit`` holders of :meth:`admitted` at once, at most ``queue`` waiting.

    Waiters are served in arrival order (an :class:`asyncio.Semaphore` wakes them first come,
    first served). A waiter that is cancelled (its caller gave up) leaves the queue without
    taking a slot.
    """

    def __init__(
        self,
        limit: int = ATTESTATION_CONCURRENCY,
        queue: int = ATTESTATION_QUEUE,
        *,
        clock: Clock | None = None,
    ) -> None:
        if limit < 1:
            raise InvalidArgumentError(f"invalid limit: {limit} must be at least 1")
        if queue < 0:
            raise InvalidArgumentError(f"invalid queue: {queue} must not be negative")
        self._limit = limit
        self._queue = queue
        self._slots = asyncio.Semaphore(limit)
        self._waiting = 0
        self._running = 0
        self._admitted = 0
        self._clock = clock or SystemClock()
        self._quiet_since = self._clock.now()

    @property
    def limit(self) -> int:
        """How many attestations run at once."""
        return self._limit

    @property
    def waiting(self) -> int:
        """How many callers wait for a slot now."""
        return self._waiting

    @property
    def admitted_total(self) -> int:
        """How many callers got a slot since this admission was made."""
        return self._admitted

    def quiet_since(self) -> datetime | None:
        """Since when no attestation has held a slot or waited for one (since this admission
        was made, when none ever did); None while one does."""
        if self._running or self._waiting:
            return None
        return self._quiet_since

    @staticmethod
    def check_time_left(seconds: float | None) -> None:
        """Raise :class:`UnavailableError` when a call that just got its slot has less than
        :data:`MIN_TIME_LEFT` seconds of its deadline left (``None``: no deadline)."""
        if seconds is not None and seconds < MIN_TIME_LEFT:
            raise UnavailableError(
                f"server busy: the call has {max(seconds, 0.0):.1f} s of its deadline left, "
                f"less than the {MIN_TIME_LEFT:.0f} s an attestation may need; retry"
            )

    def check(self) -> None:
        """Raise :class:`UnavailableError` when every slot is taken and the queue is full.

        A caller checks before spending anything else on the call (an address's rate
        allowance, say); :meth:`admitted` checks again, which agrees when no await came
        between the two.
        """
        if self._slots.locked() and self._waiting >= self._queue:
            raise UnavailableError(
                f"server busy: {self._limit} agent attestations running and {self._waiting} "
                "waiting; retry later"
            )

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold a slot for the body; raises :class:`UnavailableError` at once (before waiting)
        when every slot is taken and the queue is full."""
        self.check()
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._mark_quiet()
        self._running += 1
        self._admitted += 1
        try:
            yield
        finally:
            self._running -= 1
            self._slots.release()
            self._mark_quiet()

    def _mark_quiet(self) -> None:
        if not self._running and not self._waiting:
            self._quiet_since = self._clock.now()
