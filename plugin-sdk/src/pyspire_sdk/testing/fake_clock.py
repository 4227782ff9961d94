"""A clock that moves only when a test moves it."""

from __future__ import annotations

__all__ = ["FakeClock"]

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta

from pyspire_sdk.clock import utc

DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC)


class FakeClock:
    """A :class:`~pyspire_sdk.clock.Clock` for tests: ``advance`` moves time and wakes sleepers.

    Sleepers whose deadline is reached are woken in deadline order, and ``advance`` yields to the
    event loop so the woken tasks run before it returns.
    """

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._now = utc(start)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self._now + timedelta(seconds=seconds)
        heapq.heappush(self._sleepers, (deadline, next(self._counter), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def advance(self, delta: timedelta | float) -> None:
        """Move time forward by ``delta`` (a timedelta or seconds), waking due sleepers."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("a clock does not go backwards")
        await self.set(self._now + step)

    async def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (not earlier than now), waking due sleepers in order."""
        target = utc(moment)
        if target < self._now:
            raise ValueError("a clock does not go backwards")
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
                for _ in range(5):
                    await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)
