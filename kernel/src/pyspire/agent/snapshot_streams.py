"""The cache's snapshots as the agent's streaming APIs follow them, and the switch that ends
every open stream at shutdown.

A streaming handler (the Workload API's, the Delegated Identity API's) sends what its caller
may see at once and again whenever it changes. :meth:`SnapshotStreams.snapshots` gives it the
source's current snapshot and then every newer one, reading the source's watch in a task the
stream owns; :meth:`SnapshotStreams.stop` ends them all with UNAVAILABLE (a stream ending with
OK would look like a broken stream to clients), so an endpoint that closes need not wait for
streams that would never end on their own.
"""

from __future__ import annotations

__all__ = ["SnapshotStreams", "entries_known", "svids_settled"]

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.identities import IdentitySource, Snapshot
from pyspire.tasks import GeneratorTasks
from pyspire.waiting import sleep_or_wake
from pyspire_sdk.clock import Clock
from pyspire_sdk.selector import Selector


def svids_settled(selectors: frozenset[Selector]) -> Callable[[Snapshot], bool]:
    """Whether a first X509 answer should wait no longer: every SVID a caller with
    ``selectors`` is entitled to is there, or the server is away (so they could not come)."""

    return lambda snapshot: snapshot.settled(selectors)


def entries_known(snapshot: Snapshot) -> bool:
    """Whether the agent knows its entries (or will not learn them soon: the server is away)."""
    return snapshot.synced or snapshot.server_away


class SnapshotStreams:
    """The snapshots of ``source`` for the streams of one service.

    ``first_answer_wait`` bounds (on ``clock``) how long a stream waits for a first snapshot
    that is ready; ``shutting_down`` is the message streams end with once :meth:`stop` is
    called, and calls made afterwards are refused with it.
    """

    def __init__(
        self,
        source: IdentitySource,
        clock: Clock,
        *,
        first_answer_wait: float,
        shutting_down: str,
    ) -> None:
        self.source = source
        self.clock = clock
        self._first_answer_wait = first_answer_wait
        self._shutting_down = shutting_down
        self._stopping = asyncio.Event()
        self._feeds: set[_SnapshotFeed] = set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """End every open stream with UNAVAILABLE; calls made afterwards are refused too."""
        self._stopping.set()
        for feed in self._feeds:
            feed.wake()

    def refuse_if_stopping(self) -> None:
        """Raise UNAVAILABLE (the shutting-down message) once :meth:`stop` was called."""
        if self._stopping.is_set():
            raise GRPCError(Status.UNAVAILABLE, self._shutting_down)

    async def snapshots(
        self, ready: Callable[[Snapshot], bool] | None = None
    ) -> AsyncIterator[Snapshot]:
        """The source's current snapshot, then every newer one its watch yields, until the
        service stops, which ends the stream with UNAVAILABLE (as does the source ending its
        watch).

        When the current snapshot is ``ready`` (or no ``ready`` is given) it comes first,
        without waiting for a watch to start; the watch starts when the caller asks for more
        and yields the then-current snapshot first, so no change is missed. Otherwise the first
        snapshot is the first ready one the watch yields, or the current one once
        ``first_answer_wait`` seconds have passed. A snapshot of the revision just yielded is
        the same content and is skipped.
        """
        self.refuse_if_stopping()
        current = self.source.snapshot()
        waiting = ready is not None and not ready(current)
        if not waiting:
            yield current
        async with self._feed(after=-1 if waiting else current.revision) as feed:
            if ready is not None and waiting:
                yield await feed.first(ready, within=self._first_answer_wait)
            while True:
                yield await feed.next()

    @contextlib.asynccontextmanager
    async def _feed(self, *, after: int) -> AsyncIterator[_SnapshotFeed]:
        """The snapshots after revision ``after``, for one stream, while the block runs (the
        stream's yields are inside it); :meth:`stop` wakes it."""
        feed = _SnapshotFeed(self, after=after)
        self._feeds.add(feed)
        try:
            async with GeneratorTasks() as tasks:
                tasks.start(feed.follow(), name="snapshot-watch")
                yield feed
        finally:
            self._feeds.discard(feed)


class _SnapshotFeed:
    """The source's snapshots for one stream, after its first answer.

    :meth:`follow` reads the source's watch in a task the stream owns (see
    :class:`~pyspire.tasks.GeneratorTasks`: the reading goes on while the stream is suspended
    at a yield, and a read cancelled half-way would end the watch) and keeps only the newest
    snapshot, so a stream slower than the changes sees the latest when it comes back. The
    stream takes it with :meth:`next`; a snapshot of the revision it took last is the same
    content and is not taken again.
    """

    def __init__(self, streams: SnapshotStreams, *, after: int) -> None:
        self._streams = streams
        self._source = streams.source
        self._clock = streams.clock
        self._revision = after
        self._newest: Snapshot | None = None
        self._ended = False
        self._failure: Exception | None = None
        self._news = asyncio.Event()

    def wake(self) -> None:
        """Have the stream look again (the service is stopping)."""
        self._news.set()

    async def follow(self) -> None:
        """Keep the newest snapshot of the source's watch until it ends or this is cancelled."""
        watch = self._source.watch()
        try:
            async for snapshot in watch:
                self._newest = snapshot
                self._news.set()
        except Exception as error:  # the stream raises it when it next looks
            self._failure = error
        finally:
            self._ended = True
            self._news.set()
            close = getattr(watch, "aclose", None)
            if close is not None:
                await close()

    async def first(self, ready: Callable[[Snapshot], bool], *, within: float) -> Snapshot:
        """The first ``ready`` snapshot, or the current one once ``within`` seconds have
        passed on the clock."""
        found = await self._take(ready, within)
        if found is None:
            found = self._source.snapshot()
            self._revision = found.revision
        return found

    async def next(self) -> Snapshot:
        """The newest snapshot of a revision not taken yet, once there is one."""
        while True:
            found = await self._take(None, None)
            if found is not None:
                return found

    async def _take(
        self, ready: Callable[[Snapshot], bool] | None, within: float | None
    ) -> Snapshot | None:
        """A new snapshot that is ``ready`` (any, for None), or None once ``within`` seconds
        have passed first; UNAVAILABLE once the service stops or the watch has ended."""
        deadline = None if within is None else self._clock.now() + timedelta(seconds=within)
        while True:
            self._news.clear()
            self._streams.refuse_if_stopping()
            found, self._newest = self._newest, None
            if found is not None and _new_and_ready(found, self._revision, ready):
                self._revision = found.revision
                return found
            if self._ended:
                if self._failure is not None:
                    raise self._failure
                raise GRPCError(Status.UNAVAILABLE, "agent cache is no longer available")
            remaining = None if deadline is None else (deadline - self._clock.now()).total_seconds()
            if not await sleep_or_wake(self._clock, remaining, self._news):
                return None


def _new_and_ready(
    snapshot: Snapshot, revision: int, ready: Callable[[Snapshot], bool] | None
) -> bool:
    return snapshot.revision != revision and (ready is None or ready(snapshot))
