"""What the notification and publishing tests share: bundles that differ by sequence number, a
bounded wait for background tasks, and a task that runs a subsystem and is cancelled at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from pyspire_sdk.backoff import BackoffPolicy
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.spiffeid import TrustDomain

TD = TrustDomain("example.org")
RETRY = BackoffPolicy(initial=1.0, maximum=4.0, jitter=0.0)
"""Retries after exactly 1 s, 2 s, 4 s, 4 s, ...: no jitter, so a test knows when."""


def bundle(sequence: int) -> Bundle:
    return Bundle(TD, (X509Authority(b"root-%d" % sequence),), sequence_number=sequence)


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Let the event loop run until ``condition`` holds; fail after ``within`` seconds of
    real time (a datastore answers from a worker thread, so turns of the loop are not enough).
    Nothing here waits for the clock under test: that moves only when a test advances it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"the condition never held within {within:g}s")
        await asyncio.sleep(0.001)


async def settle(turns: int = 50) -> None:
    """Let every ready task run as far as it can (to show that something did *not* happen)."""
    for _ in range(turns):
        await asyncio.sleep(0)


@asynccontextmanager
async def running(
    run: Callable[[], Coroutine[Any, Any, None]],
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``run()`` as a task for the block, then cancel it and wait until it has ended."""
    task = asyncio.create_task(run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.done()
