"""The cache's snapshots as the agent's streaming APIs follow them, and the switch that ends
every open stream at shutdown.

A streaming handler (the Workload API's, the Delegated Identity API's) sends what its caller
may see at once and again whenever it changes. :meth:`SnapshotStreams.snapshots` gives it the
source's current snapshot and then every newer one, reading the source's watch in a task the
stream owns; :meth:`SnapshotStreams.stop` ends them all with UNAVAILABLE (a stream ending with
OK would look like a broken stream to clients), so an endpoint that closes need not wait for
streams that would never end on their own. A stream that reads its client too (Envoy's SDS)
takes a :meth:`SnapshotStreams.feed` and merges the client's messages into its look rounds.
"""

from __future__ import annotations

__all__ = ["SnapshotFeed", "SnapshotStreams", "entries_known", "svids_settled"]

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
        self.first_answer_wait = first_answer_wait
        self._shutting_down = shutting_down
        self._stopping = asyncio.Event()
        self._feeds: set[SnapshotFeed] = set()

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
        if ready is None or ready(current):
            yield current
            feed = self.feed(after=current.revision)
        else:
            feed = self.feed(ready=ready)
        async with feed as snapshots:
            while True:
                yield await snapshots.next()

    @contextlib.asynccontextmanager
    async def feed(
        self, *, after: int = -1, ready: Callable[[Snapshot], bool] | None = None
    ) -> AsyncIterator[SnapshotFeed]:
        """The snapshots after revision ``after``, for one stream, while the block runs (the
        stream's yields are inside it); :meth:`stop` wakes it. With ``ready``, the first one
        is held back until it is ready or ``first_answer_wait`` seconds have passed (see
        :class:`SnapshotFeed`). Refused with UNAVAILABLE once :meth:`stop` was called."""
        self.refuse_if_stopping()
        feed = SnapshotFeed(self, after=after, ready=ready)
        self._feeds.add(feed)
        try:
            async with GeneratorTasks() as tasks:
                tasks.start(feed.follow(), name="snapshot-watch")
                yield feed
        finally:
            self._feeds.discard(feed)


class SnapshotFeed:
    """The source's snapshots for one stream.

    :meth:`follow` reads the source's watch in a task the stream owns (see
    :class:`~pyspire.tasks.GeneratorTasks`: the reading goes on while the stream is suspended
    at a yield, and a read cancelled half-way would end the watch) and keeps only the newest
    snapshot, so a stream slower than the changes sees the latest when it comes back. A
    snapshot of the revision taken last is the same content and is not taken again.

    With ``ready``, the first snapshot taken is the first ready one, or the current one once
    the streams' ``first_answer_wait`` has passed on the clock (a first answer may wait for
    the caller's SVIDs, but not for ever).

    A stream with nothing else to read takes snapshots with :meth:`next`. A stream that also
    reads another source (a client's requests) looks at both in one loop: :meth:`look`,
    then its own source, then :meth:`take`, then :meth:`wait`; that source calls :meth:`wake`
    when it has something, so the wait ends for it too.
    """

    def __init__(
        self,
        streams: SnapshotStreams,
        *,
        after: int,
        ready: Callable[[Snapshot], bool] | None,
    ) -> None:
        self._streams = streams
        self._source = streams.source
        self._clock = streams.clock
        self._revision = after
        self._ready = ready
        self._deadline = (
            None
            if ready is None
            else self._clock.now() + timedelta(seconds=streams.first_answer_wait)
        )
        self._newest: Snapshot | None = None
        self._ended = False
        self._failure: Exception | None = None
        self._news = asyncio.Event()

    def wake(self) -> None:
        """End the stream's :meth:`wait`: something else has news, or the service stops."""
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

    async def next(self) -> Snapshot:
        """The next snapshot to send, once there is one."""
        while True:
            self.look()
            found = self.take()
            if found is not None:
                return found
            await self.wait()

    def look(self) -> None:
        """Begin a look round: news from now on ends the next :meth:`wait`; UNAVAILABLE once
        the service stops."""
        self._news.clear()
        self._streams.refuse_if_stopping()

    def take(self) -> Snapshot | None:
        """The next snapshot to send, if there is one now; the watch's failure, or
        UNAVAILABLE, once the watch has ended with nothing left to take."""
        found, self._newest = self._newest, None
        if found is not None and _new_and_ready(found, self._revision, self._ready):
            return self._took(found)
        if self._ended:
            if self._failure is not None:
                raise self._failure
            raise GRPCError(Status.UNAVAILABLE, "agent cache is no longer available")
        if self._ready is not None and self._remaining() == 0.0:
            return self._took(self._source.snapshot())
        return None

    async def wait(self) -> None:
        """Until there is news (see :meth:`wake`) or a held-back first snapshot may wait no
        longer."""
        await sleep_or_wake(self._clock, self._remaining(), self._news)

    def _took(self, snapshot: Snapshot) -> Snapshot:
        self._revision = snapshot.revision
        self._ready = None
        return snapshot

    def _remaining(self) -> float | None:
        """Seconds the first snapshot may still be held back; None when none is."""
        if self._ready is None or self._deadline is None:
            return None
        return max(0.0, (self._deadline - self._clock.now()).total_seconds())


def _new_and_ready(
    snapshot: Snapshot, revision: int, ready: Callable[[Snapshot], bool] | None
) -> bool:
    return snapshot.revision != revision and (ready is None or ready(snapshot))
