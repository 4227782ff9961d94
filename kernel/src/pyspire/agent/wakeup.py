"""Waiting on the injected clock until a deadline or an earlier wake-up, whichever comes first.

The sync manager waits out its interval unless a workload's demand wakes it; the cache sleeps
until the next SVID expires unless a new SVID moves that moment. Both wait the same way.
"""

from __future__ import annotations

__all__ = ["sleep_or_wake"]

import asyncio
from typing import Any

from pyspire_sdk.clock import Clock


async def sleep_or_wake(clock: Clock, seconds: float | None, wake: asyncio.Event) -> bool:
    """Return once ``seconds`` have passed on ``clock`` (never, for None) or ``wake`` is set,
    whichever comes first; True when woken. ``wake`` is left as it is: clearing it is the
    caller's business. Cancelling the caller leaves no task behind."""
    if wake.is_set():
        return True
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(wake.wait())}
    if seconds is not None:
        waiters.add(asyncio.ensure_future(clock.sleep(max(0.0, seconds))))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return wake.is_set()
