"""The garbage collector's policy in a long-running pyspire process (``pyspire-server run``,
``pyspire-agent run``; never a library user's or a test's process, whose heap is not ours).

CPython frees most objects by reference counting; its cyclic collector walks every tracked
object of a generation, and a full (generation 2) collection walks them all. A server holding
thousands of agent connections tracks hundreds of thousands of objects, so a full collection
stops the event loop for a time proportional to the heap: every call waiting meanwhile has that
pause in its latency. Three measures keep it out of the tail (figures in CONTRIBUTING,
``tests/bench/bench_connection_memory.py``):

- **larger young generations** (:data:`THRESHOLDS`): with CPython's default of 700 allocations
  between young collections, the objects of calls in progress survive two of them and reach the
  old generation, which fills and forces full collections under load; at 50,000 a call's
  objects are freed before the collector ever looks at them, and young collections stay short
  (they walk young objects only). Set at process start, they also make start-up faster.
- **freezing what start-up built** (:func:`freeze_startup_heap`): plugins, the registry cache,
  encoded entries, imported modules live as long as the process; once it is ready they move to
  the permanent generation, which no collection walks.
- **freezing again once a storm is over** (:class:`SettledFreeze`): what an attestation storm
  builds (agents' connections, their records and kept answers) lives as long as the agents stay
  connected, but it is born after start-up, so the collector tracks it: the first middle
  collection after the storm walks all of it (1.5 s at 1,000 agents on a quiet machine) and
  full ones later walk it again; frozen, a middle or full collection after a minute of steady
  syncing walks 170,000-250,000 objects instead of 560,000-630,000, in 190-280 ms of CPU
  instead of 390-680. Once no attestation has run or waited for
  :data:`SETTLED_AFTER` seconds, and at least one ran since the last freeze, the server
  freezes the heap as CPython's next collection ends (a young one, mostly: it has just freed
  the young garbage, and the freeze walks nothing).

CPython's rule that a full collection waits until the objects promoted since the last one are
a quarter of those already old keeps full collections rare as the number of connections grows.

What a freeze costs: a frozen object is still freed when its last reference goes, but a cycle
among frozen objects that becomes garbage stays for the life of the process. So nothing of a
connection may rely on the collector: a call's stream and asyncio's socket transport each made
a cycle that held the connection's transports, now broken (``transport/messages.py``,
``transport/listener.py``), and ``kernel/tests/transport/test_frozen_connections.py`` closes
connections frozen while open and finds none of their objects left, with the collector off.
What stays is what was already cyclic garbage in the middle and old generations at the freeze
(not collected first: that collection is the very pause the freeze avoids; the young garbage
the collection that just ended has freed) and cycles of other code that break later; freezing
once per storm, not on a timer, bounds that to what a few moments' garbage holds.

- **young collections on a timer** (:class:`YoungSweep`): CPython counts the death of an old
  or frozen object against the young generation's count (3.11 ``PyObject_GC_Del``), so a
  process that replaces long-lived objects (a sync's kept answers, a rotated SVID) grows its
  young generation without ever reaching the threshold; the collection that finally comes walks
  all of it (130-404 ms of CPU at 1,000-2,000 agents). Every :data:`SWEEP_PERIOD` seconds the
  sweep collects the young generation, and the middle one once :data:`THRESHOLDS` says so:
  each walks at most a period's survivors (a middle one twenty periods'). A period in which
  CPython collected on its own (a storm's allocations) makes no sweep.
"""

from __future__ import annotations

__all__ = [
    "SETTLED_AFTER",
    "SETTLE_CHECK_PERIOD",
    "SWEEP_PERIOD",
    "THRESHOLDS",
    "Attestations",
    "SettledFreeze",
    "YoungSweep",
    "collections_made",
    "freeze_settled_heap",
    "freeze_startup_heap",
    "tune_collector",
]

import gc
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

import structlog

from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError

THRESHOLDS = (50_000, 20, 10)
"""Allocations between young collections; young collections per middle one; middle ones per
full one (full ones also wait for CPython's quarter rule)."""

_log = structlog.get_logger("pyspire.collector")


def tune_collector() -> None:
    """Use :data:`THRESHOLDS` from now on (call once, at process start)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_heap() -> None:
    """Collect once, then move every object tracked now to the permanent generation (call
    once, when the process is ready to serve). Frozen objects are still freed when their last
    reference goes; only a cycle among them would stay."""
    gc.collect()
    gc.freeze()
    _log.debug("startup heap frozen", frozen_objects=gc.get_freeze_count())


def freeze_settled_heap() -> None:
    """Move every object tracked now to the permanent generation, collecting nothing first:
    :class:`SettledFreeze` calls it as CPython's own collection ends, when the young
    generation has just been collected. Unlike :func:`freeze_startup_heap` it runs no
    collection of its own: at the end of a storm the young generation alone took 85-490 ms
    to walk, the middle and old ones are the very pause to avoid."""
    gc.freeze()
    # No object counts here: gc.get_freeze_count() walks every frozen object (70-215 ms of CPU
    # at 1,000 agents), while the freeze itself only joins lists.
    _log.info("settled heap frozen")


SETTLED_AFTER = 3.0
"""Seconds with no attestation running or waiting after which a storm is over. Far longer than
the gaps between attestations while the admission queue drains a storm (milliseconds), and
short beside the seconds of steady syncing after which the storm's survivors reach a middle
collection (at 1,000 agents the long one came in the first seconds of the load benchmark's
steady window, which begins 5 s after the storm). A pause in a storm
(agents backing off) only makes one more freeze: a young collection, tens of milliseconds."""

SETTLE_CHECK_PERIOD = 1.0
"""Seconds between two looks at whether the server has settled."""


class Attestations(Protocol):
    """What :class:`SettledFreeze` reads of the server's agent attestations."""

    @property
    def admitted_total(self) -> int:
        """Attestations admitted since the server started (only ever grows)."""
        ...

    def quiet_since(self) -> datetime | None:
        """Since when no attestation has run or waited; None while one runs or waits."""
        ...


class SettledFreeze:
    """Freeze the heap once per storm: when ``attestations`` have been quiet for ``quiet``
    seconds on ``clock`` and at least one was admitted since the last freeze (or since this
    object was made, which the process does once it has frozen its start-up heap), the freeze
    is due, and it is made as CPython's next collection ends (:meth:`collection_ended`, in
    :data:`gc.callbacks` while :meth:`run` runs): that collection has just freed the young
    generation's garbage, and the freeze adds no walk of its own.

    ``freeze`` is :func:`freeze_settled_heap` (looked up when it is called) in a server; tests
    pass a recorder.
    """

    def __init__(
        self,
        attestations: Attestations,
        clock: Clock,
        *,
        quiet: float = SETTLED_AFTER,
        period: float = SETTLE_CHECK_PERIOD,
        freeze: Callable[[], object] | None = None,
    ) -> None:
        if quiet < 0:
            raise InvalidArgumentError(f"invalid quiet: {quiet} must not be negative")
        if period <= 0:
            raise InvalidArgumentError(f"invalid period: {period} must be positive")
        self._attestations = attestations
        self._clock = clock
        self._quiet = quiet
        self._period = period
        self._freeze = freeze
        self._frozen_after = attestations.admitted_total
        self._pending = False
        self.freezes = 0
        """Freezes made so far."""

    @property
    def pending(self) -> bool:
        """Whether a freeze waits for the next collection to end."""
        return self._pending

    def due(self) -> bool:
        """Whether a storm is over that no freeze has followed yet."""
        if self._pending or self._attestations.admitted_total == self._frozen_after:
            return False
        since = self._attestations.quiet_since()
        if since is None:
            return False
        return (self._clock.now() - since).total_seconds() >= self._quiet

    def check(self) -> bool:
        """When :meth:`due`, have the next collection's end freeze the heap; True then."""
        if not self.due():
            return False
        self._frozen_after = self._attestations.admitted_total
        self._pending = True
        return True

    def collection_ended(self, phase: str, info: Mapping[str, int]) -> None:
        """The :data:`gc.callbacks` hook: freeze as a collection ends, if a freeze is due."""
        if phase != "stop" or not self._pending:
            return
        self._pending = False
        (self._freeze or freeze_settled_heap)()
        self.freezes += 1

    async def run(self) -> None:
        """:meth:`check` every ``period`` seconds until cancelled (run by the server's task
        group, which cancels and awaits it); :meth:`collection_ended` hooked meanwhile."""
        gc.callbacks.append(self.collection_ended)
        try:
            while True:
                await self._clock.sleep(self._period)
                self.check()
        finally:
            gc.callbacks.remove(self.collection_ended)


SWEEP_PERIOD = 1.0
"""Seconds between two young collections of :class:`YoungSweep`. A syncing server's young
survivors of one second take a few milliseconds to walk; a quiet process's, microseconds."""


def collections_made() -> int:
    """Collections CPython has made in this process so far, of every generation."""
    return sum(generation["collections"] for generation in gc.get_stats())


class YoungSweep:
    """Collect the young generation every ``period`` seconds on ``clock``, and the middle one
    when its count has reached its threshold, as CPython's own collections would if the young
    count still counted allocations; a period in which CPython collected on its own is left to
    it.

    CPython's automatic collections start when the young count passes its threshold, but that
    count also goes down when any tracked object dies, old and frozen ones included: in a
    process that replaces long-lived objects as fast as it makes new ones, the count stays
    near zero while the young generation grows to hundreds of thousands of objects, and the
    collection that finally comes stops the loop for the whole of it. Collections made here
    count as CPython's do (a young one adds to the middle count, a middle one to the old
    count), so full collections keep CPython's own schedule. While the count does its work (a
    storm's allocations pass the threshold many times a second) a sweep would only add walks
    of what the storm builds, so a period with a collection of CPython's own makes none.

    ``collect``, ``counts`` and ``made`` are :func:`gc.collect`, :func:`gc.get_count` and
    :func:`collections_made` in a process; tests pass recorders.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        period: float = SWEEP_PERIOD,
        collect: Callable[[int], object] = gc.collect,
        counts: Callable[[], tuple[int, int, int]] = gc.get_count,
        made: Callable[[], int] = collections_made,
    ) -> None:
        if period <= 0:
            raise InvalidArgumentError(f"invalid period: {period} must be positive")
        self._clock = clock
        self._period = period
        self._collect = collect
        self._counts = counts
        self._made = made
        self._seen = made()
        self.sweeps = 0
        """Collections made so far."""

    def sweep(self) -> int | None:
        """Collect the young generation, or the middle one (with the young) when it is due,
        unless CPython collected on its own since the last sweep; the generation collected,
        None when none was."""
        if self._made() != self._seen:
            self._seen = self._made()
            return None
        generation = 1 if self._counts()[1] >= THRESHOLDS[1] else 0
        self._collect(generation)
        self._seen = self._made()
        self.sweeps += 1
        return generation

    async def run(self) -> None:
        """:meth:`sweep` every ``period`` seconds until cancelled (by the task group of the
        process's run command, which cancels and awaits it)."""
        while True:
            await self._clock.sleep(self._period)
            self.sweep()
