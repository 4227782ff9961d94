"""The one way to wait: on the injected clock until a deadline, or until woken earlier.

Every loop that sleeps between rounds but must react at once to news (the sync manager to a
workload's demand, the agent cache to a new SVID expiry, the registry cache to a write, the
server identity to a CA change) waits through :func:`sleep_or_wake`. Time comes from the
injected clock, so tests move it instead of sleeping, and the waiting is structured: the clock
sleep and the event wait run in one anyio task group that is cancelled and awaited before
:func:`sleep_or_wake` returns, so no task outlives the call.
"""

from __future__ import annotations

__all__ = ["sleep_or_wake"]

import asyncio

import anyio

from pyspire_sdk.clock import Clock


async def sleep_or_wake(clock: Clock, seconds: float | None, wake: asyncio.Event) -> bool:
    """Return once ``seconds`` have passed on ``clock`` (never, for None) or ``wake`` is set,
    whichever comes first; True when woken. ``wake`` is left as it is: clearing it is the
    caller's business. Cancelling the caller cancels the wait and leaves no task behind."""
    if wake.is_set():
        return True
    async with anyio.create_task_group() as group:

        async def woken() -> None:
            await wake.wait()
            group.cancel_scope.cancel()

        group.start_soon(woken)
        if seconds is not None:
            await clock.sleep(max(0.0, seconds))
            group.cancel_scope.cancel()
    return wake.is_set()
