"""The one way to wait: on the injected clock until a deadline, or until woken earlier.

Every loop that sleeps between rounds but must react at once to news (the sync manager to a
workload's demand, the agent cache to a new SVID expiry, the registry cache to a write, the
server identity to a CA change) waits through :func:`sleep_or_wake`, and work that must give
way to a stop request (an agent attesting against a server that is away, ``api watch``) runs
through :func:`run_until`. Time comes from the injected clock, so tests move it instead of
sleeping, and the waiting is structured: what runs beside the caller runs in an anyio task
group that is cancelled and awaited before the call returns, so no task outlives it.
"""

from __future__ import annotations

__all__ = ["run_until", "sleep_or_wake"]

import asyncio
from collections.abc import Awaitable, Callable

import anyio

from pyspire_sdk.clock import Clock


async def sleep_or_wake(clock: Clock, seconds: float | None, wake: asyncio.Event) -> bool:
    """Return once ``seconds`` have passed on ``clock`` (never, for None) or ``wake`` is set,
    whichever comes first; True when woken. ``wake`` is left as it is: clearing it is the
    caller's business. Cancelling the caller cancels the wait and leaves no task behind."""
    if wake.is_set():
        return True
    if seconds is None:
        await wake.wait()
        return True
    async with anyio.create_task_group() as group:

        async def woken() -> None:
            await wake.wait()
            group.cancel_scope.cancel()

        group.start_soon(woken)
        await clock.sleep(max(0.0, seconds))
        group.cancel_scope.cancel()
    return wake.is_set()


async def run_until(stop: asyncio.Event, work: Callable[[], Awaitable[object]]) -> bool:
    """Run ``work`` until it returns or ``stop`` is set, whichever comes first; True when it
    returned. When ``stop`` comes first, ``work`` is cancelled and awaited before this returns
    False; an exception ``work`` raises propagates as itself (not in an exception group).

    ``work`` runs in a task of its own: a library that cancels the task it runs in to end a
    call (grpclib does, on a lost connection or a deadline) then cannot confuse the caller's
    cancel scopes.
    """
    if stop.is_set():
        return False
    finished = False
    failure: Exception | None = None
    async with anyio.create_task_group() as group:

        async def run() -> None:
            nonlocal finished, failure
            try:
                await work()
                finished = True
            except Exception as error:  # raised below, once the group has ended
                failure = error
            group.cancel_scope.cancel()

        group.start_soon(run)
        await stop.wait()
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return finished
