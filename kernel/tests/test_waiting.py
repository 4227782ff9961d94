"""The one way to wait: a clock sleep cut short by an event, and work cut short by a stop."""

from __future__ import annotations

import asyncio
import contextlib

import anyio
import pytest

from pyspire.waiting import run_until, sleep_or_wake
from pyspire_sdk.testing import FakeClock


async def test_sleep_or_wake_returns_when_woken_or_when_the_time_has_passed(
    fake_clock: FakeClock,
) -> None:
    wake = asyncio.Event()
    sleeping = asyncio.create_task(sleep_or_wake(fake_clock, 10, wake))
    await asyncio.sleep(0)
    wake.set()
    assert await sleeping is True
    assert fake_clock.sleepers == 0

    wake.clear()
    sleeping = asyncio.create_task(sleep_or_wake(fake_clock, 10, wake))
    await asyncio.sleep(0)  # the sleeper registers at its first step
    assert fake_clock.sleepers == 1
    await fake_clock.advance(10)
    assert await sleeping is False


async def test_sleep_or_wake_without_a_deadline_waits_for_the_event(
    fake_clock: FakeClock,
) -> None:
    wake = asyncio.Event()
    sleeping = asyncio.create_task(sleep_or_wake(fake_clock, None, wake))
    await fake_clock.advance(3600)
    assert not sleeping.done()
    wake.set()
    assert await sleeping is True


async def test_run_until_returns_true_when_the_work_ends() -> None:
    ran = []

    async def work() -> None:
        ran.append(True)

    assert await run_until(asyncio.Event(), work) is True
    assert ran == [True]


async def test_run_until_cancels_and_awaits_the_work_when_stopped() -> None:
    stop = asyncio.Event()
    started = asyncio.Event()
    ended = []

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(0)
            ended.append(True)

    running = asyncio.create_task(run_until(stop, work))
    await started.wait()
    stop.set()
    assert await running is False
    assert ended == [True], "the work ended before run_until returned"


async def test_run_until_does_not_start_the_work_once_stopped() -> None:
    stop = asyncio.Event()
    stop.set()
    ran = []

    async def work() -> None:
        ran.append(True)

    assert await run_until(stop, work) is False
    assert ran == []


async def test_run_until_raises_the_work_s_exception_as_itself() -> None:
    async def work() -> None:
        raise PermissionError("refused")

    with pytest.raises(PermissionError, match="refused"):
        await run_until(asyncio.Event(), work)


async def test_run_until_survives_work_that_cancels_its_own_task() -> None:
    """grpclib ends a call by cancelling the task it runs in and raising its own error in
    place of the CancelledError, without uncancelling the task: such work must not look like a
    cancellation of the caller."""

    async def work() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        # Turned into a result here, as grpclib turns it into its own error.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)

    assert await run_until(asyncio.Event(), work) is True
