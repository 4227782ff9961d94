"""Running things side by side, each with an owner that cancels and awaits it.

The rule is anyio's: a task runs in a task group (or is a call bounded by a cancel scope), so
it never outlives the code that started it. Three shapes need help:

- :func:`run_services`, the background services of a process (the server's, the agent's) in
  one task group until a stop request;
- :func:`all_of`, a gather that keeps the rule (``asyncio.gather`` leaves the others running
  when one fails) and raises the first failure as itself, so a caller's ``except
  PyspireError`` still sees it;
- :class:`GeneratorTasks`, the one exception: an async generator that needs work to go on while
  it is suspended at a ``yield`` (a node attestor between the challenges it relays, a watch
  between the messages of a stream). A task group cannot span a ``yield``: its cancel scope
  would belong to whichever task resumes the generator next, and a consumer that stops
  iterating (a client hanging up) leaves the generator to be finalized later, in another task.
  Such a generator owns its tasks instead, and cancels and awaits them when it ends.
"""

from __future__ import annotations

__all__ = ["GeneratorTasks", "Service", "all_of", "run_services"]

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Self, TypeVar

import anyio

T = TypeVar("T")

Service = Callable[[], Coroutine[object, object, None]]
"""A background service of a process: runs until cancelled."""


async def run_services(
    services: Mapping[str, Service],
    *,
    stop: asyncio.Event,
    stopping: Callable[[], Awaitable[None]],
) -> None:
    """Run ``services`` in one task group until ``stop`` is set, then await ``stopping`` (say
    so, drain calls in flight) and cancel them. The first service to fail cancels the others,
    which are awaited, and the failure is raised (in an exception group, as anyio raises it).
    """
    async with anyio.create_task_group() as group:
        for name, service in services.items():
            group.start_soon(service, name=name)
        await stop.wait()
        await stopping()
        group.cancel_scope.cancel()


async def all_of(works: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """The results of ``works``, run side by side in one task group, in their order.

    The first of them to raise cancels the others, which are awaited, and its exception is
    raised as itself.
    """
    results: dict[int, T] = {}
    failures: list[Exception] = []
    async with anyio.create_task_group() as group:

        async def run(index: int, work: Callable[[], Awaitable[T]]) -> None:
            try:
                results[index] = await work()
            except Exception as error:  # the first is raised below, once the group has ended
                failures.append(error)
                group.cancel_scope.cancel()

        for index, work in enumerate(works):
            group.start_soon(run, index, work)
    if failures:
        raise failures[0]
    return [results[index] for index in range(len(works))]


class GeneratorTasks:
    """The tasks an async generator keeps running while it is suspended at a ``yield``.

    Open it with ``async with`` around the yields and start the work with :meth:`start`.
    Leaving the block, however the generator ends (exhausted, closed, cancelled or collected),
    cancels every task still running and waits until each has ended. A task's failure is the
    generator's to see when it awaits the task; one it never awaits is dropped with the task.
    """

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def start(self, work: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``work`` in a task these tasks own."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._running.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # seen here, so an unawaited failure is not reported as lost

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        interrupted: asyncio.CancelledError | None = None
        while running := [task for task in self._running if not task.done()]:
            for task in running:
                task.cancel()
            try:
                await asyncio.wait(running)
            except asyncio.CancelledError as cancelled:
                # Cancelled while waiting: the tasks are still ours to wait for.
                interrupted = cancelled
        if interrupted is not None:
            raise interrupted
