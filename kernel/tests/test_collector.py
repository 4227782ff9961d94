"""The collector policy of a long-running process: thresholds at start, start-up heap frozen
once ready (and the run command applying both), the heap frozen again once a storm is over
(timed on a fake clock)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import anyio
import pytest

from pyspire.cli.commands.run import _run_freezing_when_ready
from pyspire.collector import (
    SWEEP_PERIOD,
    THRESHOLDS,
    SettledFreeze,
    YoungSweep,
    freeze_settled_heap,
    freeze_startup_heap,
    tune_collector,
)
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.testing import FakeClock


@pytest.fixture(autouse=True)
def restored_collector() -> Iterator[None]:
    """This is the test process's collector: leave it as it was."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tuning_sets_the_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector()
    assert gc.get_threshold() == THRESHOLDS
    assert THRESHOLDS[0] >= 10_000, "a call's objects must die young, before any collection"


def test_freezing_moves_the_live_heap_out_of_every_collection() -> None:
    gc.unfreeze()
    survivor = [{"entry": number} for number in range(1000)]
    freeze_startup_heap()
    assert gc.get_freeze_count() >= len(survivor)
    assert all(not gc.is_finalized(item) for item in survivor)
    # What is frozen is in no generation: a full collection walks only what came later.
    assert len(gc.get_objects()) < gc.get_freeze_count()


class _Runtime:
    def __init__(self, failure: Exception | None = None) -> None:
        self.ready = asyncio.Event()
        self.failure = failure
        self.frozen_when_ready = -1

    def stop(self) -> None:
        pass

    async def run(self) -> None:
        self.ready.set()
        for _ in range(3):
            await asyncio.sleep(0)
        self.frozen_when_ready = gc.get_freeze_count()
        if self.failure is not None:
            raise self.failure


async def test_the_run_command_freezes_the_heap_once_the_runtime_is_ready() -> None:
    gc.unfreeze()
    runtime = _Runtime()
    await _run_freezing_when_ready(runtime)
    assert runtime.frozen_when_ready > 0


async def test_the_run_command_sweeps_the_young_generation_on_its_clock_once_ready() -> None:
    gc.unfreeze()
    clock = FakeClock()
    runtime = _Runtime()
    garbage_generations: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            garbage_generations.append(info["generation"])

    async def run_and_advance() -> None:
        runtime.ready.set()
        for _ in range(100):
            if clock.sleepers:
                break
            await asyncio.sleep(0)
        gc.callbacks.append(record)
        try:
            await clock.advance(SWEEP_PERIOD)
            await clock.advance(SWEEP_PERIOD)
        finally:
            gc.callbacks.remove(record)

    runtime.run = run_and_advance  # type: ignore[method-assign]
    await _run_freezing_when_ready(runtime, clock)
    assert garbage_generations.count(0) >= 2, "one young collection per period of the clock"
    assert clock.sleepers == 0, "the sweep ends with the runtime"


async def test_the_run_command_raises_a_runtime_failure_as_itself() -> None:
    with pytest.raises(ValueError, match="start-up failed"):
        await _run_freezing_when_ready(_Runtime(ValueError("start-up failed")))


@dataclass
class _Attestations:
    """The admission as the policy reads it, set by the test."""

    admitted_total: int = 0
    quiet: datetime | None = None

    def quiet_since(self) -> datetime | None:
        return self.quiet


class _Freezes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def _settled(clock: FakeClock, attestations: _Attestations) -> tuple[SettledFreeze, _Freezes]:
    freezes = _Freezes()
    return SettledFreeze(attestations, clock, quiet=10, period=1, freeze=freezes), freezes


STOP = {"generation": 0, "collected": 0, "uncollectable": 0}


async def test_the_heap_is_frozen_once_a_storm_has_been_quiet_long_enough() -> None:
    clock = FakeClock()
    attestations = _Attestations()
    policy, freezes = _settled(clock, attestations)
    attestations.admitted_total = 1000
    assert not policy.check(), "the storm still runs"
    attestations.quiet = clock.now()
    await clock.advance(9.5)
    assert not policy.check(), "quiet for less than 10 s"
    await clock.advance(0.5)
    assert policy.check()
    assert policy.pending and freezes.count == 0, "the freeze waits for a collection to end"
    policy.collection_ended("start", STOP)
    assert freezes.count == 0
    policy.collection_ended("stop", STOP)
    assert freezes.count == 1 and not policy.pending
    policy.collection_ended("stop", STOP)
    await clock.advance(60)
    assert not policy.check(), "no attestation since the freeze"
    attestations.admitted_total += 1
    attestations.quiet = clock.now()
    await clock.advance(10)
    assert policy.check(), "a later storm, however small, is frozen after in turn"
    policy.collection_ended("stop", STOP)
    assert freezes.count == policy.freezes == 2


async def test_a_server_without_attestations_never_freezes_again() -> None:
    clock = FakeClock()
    attestations = _Attestations(admitted_total=5, quiet=clock.now())
    policy, freezes = _settled(clock, attestations)
    await clock.advance(3600)
    assert not policy.check(), "what was admitted before the policy began is not a storm"
    policy.collection_ended("stop", STOP)
    assert freezes.count == 0


async def test_the_policy_checks_on_its_clock_and_freezes_as_a_collection_ends() -> None:
    clock = FakeClock()
    attestations = _Attestations()
    policy, freezes = _settled(clock, attestations)
    async with anyio.create_task_group() as group:
        group.start_soon(policy.run)
        await clock.advance(0)
        assert policy.collection_ended in gc.callbacks
        attestations.admitted_total = 3
        attestations.quiet = clock.now()
        for _ in range(9):
            await clock.advance(1)
        gc.collect(0)
        assert freezes.count == 0
        await clock.advance(1)
        assert policy.pending
        gc.collect(0)
        assert freezes.count == 1
        group.cancel_scope.cancel()
    assert clock.sleepers == 0
    assert policy.collection_ended not in gc.callbacks


def test_bad_policy_settings_are_refused() -> None:
    clock = FakeClock()
    with pytest.raises(InvalidArgumentError, match="invalid quiet: -1 must not be negative"):
        SettledFreeze(_Attestations(), clock, quiet=-1)
    with pytest.raises(InvalidArgumentError, match="invalid period: 0 must be positive"):
        SettledFreeze(_Attestations(), clock, period=0)


def test_the_settled_freeze_walks_nothing_and_freezes_every_generation() -> None:
    gc.unfreeze()
    gc.collect()
    survivors = [{"agent": [number]} for number in range(1000)]
    gc.collect(1)  # the storm's objects reached the old generation
    young = [[number] for number in range(100)]
    walked: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            walked.append(info["generation"])

    gc.callbacks.append(record)
    try:
        freeze_settled_heap()
    finally:
        gc.callbacks.remove(record)
    assert walked == [], "the freeze runs no collection of its own"
    assert gc.get_freeze_count() >= len(survivors) + len(young)
    assert not gc.get_objects(2), "what was old is frozen now"
    tracked = {id(item) for item in gc.get_objects()}
    assert not [item for item in young if id(item) in tracked], "and what was young"


class _Collections:
    """:func:`gc.collect` and :func:`gc.get_count` as the sweep sees them, set by the test."""

    def __init__(self) -> None:
        self.counts = (0, 0, 0)
        self.collected: list[int] = []
        self.made = 0
        """Collections of every kind, CPython's own included."""

    def collect(self, generation: int) -> None:
        self.collected.append(generation)
        self.made += 1
        _, middle, old = self.counts
        self.counts = (0, middle + 1, old) if generation == 0 else (0, 0, old + 1)

    def get_count(self) -> tuple[int, int, int]:
        return self.counts


def _sweep(clock: FakeClock, collections: _Collections, *, period: float = 1) -> YoungSweep:
    return YoungSweep(
        clock,
        period=period,
        collect=collections.collect,
        counts=collections.get_count,
        made=lambda: collections.made,
    )


async def test_the_sweep_collects_the_young_generation_every_period_and_the_middle_when_due() -> (
    None
):
    clock = FakeClock()
    collections = _Collections()
    sweep = YoungSweep(clock, period=2, collect=collections.collect, counts=collections.get_count)
    async with anyio.create_task_group() as group:
        group.start_soon(sweep.run)
        await clock.advance(1)
        assert collections.collected == [], "nothing before a whole period"
        for _ in range(THRESHOLDS[1] + 1):
            await clock.advance(2)
        group.cancel_scope.cancel()
    assert collections.collected == [0] * THRESHOLDS[1] + [1]
    assert sweep.sweeps == THRESHOLDS[1] + 1


def test_a_sweep_bounds_the_young_generation_that_replaced_old_objects_grow() -> None:
    """The failure the sweep exists for, in CPython itself: old objects replaced by new ones
    keep the young count near zero while the young generation grows without a collection."""
    gc.collect()
    gc.set_threshold(*THRESHOLDS)
    kept = {number: [number] for number in range(3 * THRESHOLDS[0])}
    gc.freeze()
    try:
        for number in kept:
            kept[number] = [number]  # a new long-lived object replaces a frozen one
        assert gc.get_count()[0] < THRESHOLDS[0], "CPython saw no reason to collect"
        assert len(gc.get_objects(0)) >= len(kept), "yet every replacement is young"
        YoungSweep(FakeClock()).sweep()
        assert len(gc.get_objects(0)) < 100
    finally:
        gc.unfreeze()


def test_a_sweep_period_must_be_positive() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid period: 0 must be positive"):
        YoungSweep(FakeClock(), period=0)


def test_a_period_in_which_cpython_collected_on_its_own_makes_no_sweep() -> None:
    collections = _Collections()
    sweep = _sweep(FakeClock(), collections)
    collections.made += 1  # an automatic collection: the count is doing its work
    assert sweep.sweep() is None
    assert collections.collected == []
    assert sweep.sweep() == 0, "the next quiet period sweeps again"
    assert sweep.sweep() == 0, "its own collection does not count as CPython's"
    assert collections.collected == [0, 0]
