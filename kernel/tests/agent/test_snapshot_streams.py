"""SnapshotStreams' feed, the one home of following a source's watch for a stream: the first
snapshot held back until ready or the first answer's wait has passed on the clock, only the
newest snapshot kept, a wake from another source (a client's requests), and the stop switch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.identities import Snapshot
from pyspire.agent.snapshot_streams import SnapshotFeed, SnapshotStreams, entries_known
from pyspire_sdk.testing import FakeClock

WAIT = 5.0
TIMEOUT = 5.0


class Source:
    """An identity source whose snapshots a test publishes; its one watch can be ended."""

    def __init__(self, *, synced: bool) -> None:
        empty = Snapshot(revision=1, identities=(), bundle=None, federated_bundles={})
        self._snapshot = replace(empty, synced=synced)
        self._published: asyncio.Queue[Snapshot | None] = asyncio.Queue()

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def publish(self, *, synced: bool) -> Snapshot:
        revision = self._snapshot.revision + 1
        self._snapshot = replace(self._snapshot, revision=revision, synced=synced)
        self._published.put_nowait(self._snapshot)
        return self._snapshot

    def end_watch(self) -> None:
        self._published.put_nowait(None)

    async def watch(self) -> AsyncIterator[Snapshot]:
        yield self._snapshot
        while (snapshot := await self._published.get()) is not None:
            yield snapshot


def streams_of(source: Source, clock: FakeClock) -> SnapshotStreams:
    return SnapshotStreams(
        source,  # type: ignore[arg-type]  # no demand or JWT-SVIDs are asked of it here
        clock,
        first_answer_wait=WAIT,
        shutting_down="test api is shutting down",
    )


async def ended_with(taking: asyncio.Future[Snapshot]) -> tuple[Status, str | None]:
    """The status and message the stream ended with."""
    with pytest.raises(GRPCError) as ended:
        await asyncio.wait_for(taking, TIMEOUT)
    return ended.value.status, ended.value.message


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_first_snapshot_waits_for_a_ready_one() -> None:
    source, clock = Source(synced=False), FakeClock()
    async with streams_of(source, clock).feed(ready=entries_known) as feed:
        taking = asyncio.ensure_future(feed.next())
        await settle()
        source.publish(synced=False)
        await settle()
        assert not taking.done()
        ready = source.publish(synced=True)
        assert await asyncio.wait_for(taking, TIMEOUT) == ready


async def test_the_first_snapshot_waits_no_longer_than_first_answer_wait() -> None:
    source, clock = Source(synced=False), FakeClock()
    async with streams_of(source, clock).feed(ready=entries_known) as feed:
        taking = asyncio.ensure_future(feed.next())
        await settle()
        await clock.advance(WAIT - 1)
        assert not taking.done()
        await clock.advance(1)
        assert await asyncio.wait_for(taking, TIMEOUT) == source.snapshot()


async def test_after_the_first_only_the_newest_of_new_revisions_is_taken() -> None:
    source, clock = Source(synced=True), FakeClock()
    async with streams_of(source, clock).feed() as feed:
        assert (await asyncio.wait_for(feed.next(), TIMEOUT)).revision == 1
        source.publish(synced=True)
        await settle()
        newest = source.publish(synced=True)
        await settle()
        assert await asyncio.wait_for(feed.next(), TIMEOUT) == newest
        taking = asyncio.ensure_future(feed.next())
        await settle()
        assert not taking.done()
        taking.cancel()


async def test_another_source_wakes_a_look_round_without_a_snapshot() -> None:
    source, clock = Source(synced=False), FakeClock()
    async with streams_of(source, clock).feed(ready=entries_known) as feed:
        await settle()
        rounds: list[Snapshot | None] = []

        async def look_rounds(feed: SnapshotFeed) -> None:
            while True:
                feed.look()
                found = feed.take()
                rounds.append(found)
                if found is not None:
                    return
                await feed.wait()

        looking = asyncio.ensure_future(look_rounds(feed))
        await settle()
        assert rounds == [None]
        feed.wake()
        await settle()
        assert rounds == [None, None]
        ready = source.publish(synced=True)
        await asyncio.wait_for(looking, TIMEOUT)
        assert rounds[-1] == ready


async def test_stop_ends_a_waiting_stream_and_refuses_new_ones() -> None:
    source, clock = Source(synced=True), FakeClock()
    streams = streams_of(source, clock)
    async with streams.feed(after=source.snapshot().revision) as feed:
        taking = asyncio.ensure_future(feed.next())
        await settle()
        streams.stop()
        assert await ended_with(taking) == (Status.UNAVAILABLE, "test api is shutting down")
    with pytest.raises(GRPCError) as refused:
        async with streams.feed():
            pass
    assert refused.value.message == "test api is shutting down"


async def test_a_watch_that_ends_ends_the_stream_with_unavailable() -> None:
    source, clock = Source(synced=True), FakeClock()
    async with streams_of(source, clock).feed(after=source.snapshot().revision) as feed:
        taking = asyncio.ensure_future(feed.next())
        await settle()
        source.end_watch()
        ended = await ended_with(taking)
    assert ended == (Status.UNAVAILABLE, "agent cache is no longer available")
