"""The collector policy of a long-running process: thresholds at start, start-up heap frozen
once ready (and the run command applying both)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from pyspire.cli.commands.run import _run_freezing_when_ready
from pyspire.collector import THRESHOLDS, freeze_startup_heap, tune_collector


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


async def test_the_run_command_raises_a_runtime_failure_as_itself() -> None:
    with pytest.raises(ValueError, match="start-up failed"):
        await _run_freezing_when_ready(_Runtime(ValueError("start-up failed")))
