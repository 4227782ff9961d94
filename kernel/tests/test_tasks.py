"""Tasks with owners: a process's background services, a gather that cancels the rest, and
the tasks an async generator keeps across its yields."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pyspire.tasks import GeneratorTasks, all_of, run_services


async def _forever(ended: list[str], name: str, started: asyncio.Event | None = None) -> None:
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    finally:
        ended.append(name)


async def test_all_of_gives_the_results_in_order() -> None:
    async def value(number: int) -> int:
        await asyncio.sleep(0.001 * (3 - number))
        return number

    works: list[Callable[[], Awaitable[int]]] = [
        lambda: value(1),
        lambda: value(2),
        lambda: value(3),
    ]
    assert await all_of(works) == [1, 2, 3]
    assert await all_of([]) == []


async def test_all_of_raises_the_first_failure_as_itself_and_ends_the_others() -> None:
    ended: list[str] = []

    async def failing() -> None:
        await asyncio.sleep(0)
        raise LookupError("no such entry")

    with pytest.raises(LookupError, match="no such entry"):
        await all_of([lambda: _forever(ended, "a"), failing, lambda: _forever(ended, "b")])
    assert sorted(ended) == ["a", "b"], "the others ended before all_of raised"


async def test_run_services_runs_until_stopped_then_says_so_before_cancelling() -> None:
    stop = asyncio.Event()
    ended: list[str] = []

    async def stopping() -> None:
        ended.append("stopping")

    started = [asyncio.Event(), asyncio.Event()]

    async def one() -> None:
        await _forever(ended, "one", started[0])

    async def two() -> None:
        await _forever(ended, "two", started[1])

    running = asyncio.create_task(
        run_services({"one": one, "two": two}, stop=stop, stopping=stopping)
    )
    for event in started:
        await event.wait()
    assert not running.done()
    stop.set()
    await running
    assert ended[0] == "stopping"
    assert sorted(ended[1:]) == ["one", "two"]


async def test_a_failing_service_stops_the_others() -> None:
    ended: list[str] = []

    async def other() -> None:
        await _forever(ended, "other")

    async def failing() -> None:
        raise RuntimeError("broken")

    async def stopping() -> None:
        ended.append("stopping")

    with pytest.raises(ExceptionGroup) as raised:
        await run_services(
            {"other": other, "failing": failing}, stop=asyncio.Event(), stopping=stopping
        )
    assert [str(error) for error in raised.value.exceptions] == ["broken"]
    assert ended == ["other"]


async def _generator(ended: list[str], started: asyncio.Event) -> AsyncIterator[int]:
    async with GeneratorTasks() as tasks:
        tasks.start(_forever(ended, "helper", started))
        yield 1
        yield 2


async def test_generator_tasks_end_when_the_generator_is_closed_at_a_yield() -> None:
    ended: list[str] = []
    started = asyncio.Event()
    stream = _generator(ended, started)
    assert await anext(stream) == 1
    await started.wait()
    assert ended == []
    await stream.aclose()
    assert ended == ["helper"]


async def test_generator_tasks_end_when_the_consumer_is_cancelled() -> None:
    ended: list[str] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in _generator(ended, started):
            await asyncio.Event().wait()

    consumer = asyncio.create_task(consume())
    await started.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    # The generator is finalized by the loop once the consumer dropped it.
    for _ in range(100):
        if ended:
            break
        await asyncio.sleep(0)
    assert ended == ["helper"]


async def test_generator_tasks_wait_for_a_slow_task_even_when_cancelled_meanwhile() -> None:
    ended: list[str] = []
    started, cancelled, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_to_end() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await release.wait()
            ended.append("slow")
            raise

    async def owner() -> None:
        async with GeneratorTasks() as tasks:
            tasks.start(slow_to_end())
            await started.wait()

    running = asyncio.create_task(owner())
    await cancelled.wait()  # the owner left its block and cancelled the task
    running.cancel()  # and is cancelled itself while it waits for the task
    for _ in range(10):
        await asyncio.sleep(0)
    assert not running.done(), "leaving the block waits for the task to end"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert ended == ["slow"]


async def test_an_unawaited_failure_of_a_generator_task_is_dropped_with_it() -> None:
    async def failing() -> None:
        raise RuntimeError("nobody asked")

    async with GeneratorTasks() as tasks:
        task = tasks.start(failing())
        await asyncio.sleep(0)
    assert task.done()
    with pytest.raises(RuntimeError):
        task.result()
