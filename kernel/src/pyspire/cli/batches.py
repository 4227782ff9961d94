"""Many items sent to the server in calls that fit its limits, with the next call on its way
while the last one's answer is printed.

A server accepts request messages up to 4 MiB (gRPC's customary default) and its clients read
answers of the same size; a batch call echoes every item with its result, so a call carries at
most :data:`MAX_BATCH_ITEMS` items and :data:`MAX_BATCH_BYTES` of encoded items, whichever comes
first: a hundred thousand entries from one ``-data`` file become a few hundred calls, each well
within both limits and within the call timeout. :func:`batched` measures each item once (its
encoded size) as it goes, so the measuring of the next batch overlaps the server's work on the
previous one in :func:`send_pipelined`, which keeps up to ``window`` calls in flight and hands
their answers over in request order.
"""

from __future__ import annotations

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_ITEMS", "batched", "send_pipelined"]

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

ItemT = TypeVar("ItemT")
ReplyT = TypeVar("ReplyT")

MAX_BATCH_ITEMS = 500
"""Items per call at most (SPIRE's page size): a call's server time stays far below the call
timeout even on a busy server, and progress is reported in steps an operator can follow."""

MAX_BATCH_BYTES = 2 * 1024 * 1024
"""Encoded item bytes per call at most: half the 4 MiB message limit, so the answer, which
echoes each item with its id, status, revision and creation time, fits as well."""

_FRAMING = 8
"""Bytes counted per item beyond its own encoding: its field tag and length prefix, and some
room for what the answer adds around it."""


def batched(
    items: Iterable[ItemT],
    size_of: Callable[[ItemT], int],
    *,
    max_items: int = MAX_BATCH_ITEMS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[ItemT]]:
    """``items`` in consecutive batches of at most ``max_items`` items and ``max_bytes`` bytes
    (``size_of(item)`` plus a few bytes of framing each). An item larger than ``max_bytes`` by
    itself travels alone, and the server says what it thinks of it. Lazy: each item is
    measured when its batch is asked for."""
    if max_items < 1 or max_bytes < 1:
        raise ValueError("batches need room for at least one item")
    batch: list[ItemT] = []
    size = 0
    for item in items:
        item_size = size_of(item) + _FRAMING
        if batch and (len(batch) >= max_items or size + item_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


async def send_pipelined(
    batches: Iterable[Sequence[ItemT]],
    call: Callable[[Sequence[ItemT]], Awaitable[ReplyT]],
    handle: Callable[[Sequence[ItemT], ReplyT], None],
    *,
    window: int = 2,
) -> None:
    """Send every batch with ``call``, at most ``window`` calls in flight, and give each answer
    to ``handle`` with its batch, in the order of the batches.

    The first failing call raises its error once the answers before it were handled; calls
    still in flight are cancelled (what they did on the server is done, and unknown here).
    The calls run in one task group, ended before this returns.
    """
    if window < 1:
        raise ValueError("window must be at least 1")
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        try:
            await _in_order(group, iter(batches), call, handle, window)
        except Exception as error:  # raised below, once the calls in flight are cancelled
            failure = error
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _in_order(
    group: TaskGroup,
    batches: Iterator[Sequence[ItemT]],
    call: Callable[[Sequence[ItemT]], Awaitable[ReplyT]],
    handle: Callable[[Sequence[ItemT], ReplyT], None],
    window: int,
) -> None:
    pending: deque[tuple[Sequence[ItemT], _Reply[ReplyT]]] = deque()
    while True:
        while len(pending) < window and (batch := next(batches, None)) is not None:
            reply: _Reply[ReplyT] = _Reply()
            group.start_soon(reply.fill, call, batch)
            pending.append((batch, reply))
            # Let the call start (send its request) before the next batch is measured.
            await anyio.lowlevel.checkpoint()
        if not pending:
            return
        batch, reply = pending.popleft()
        handle(batch, await reply.get())


class _Reply(Generic[ReplyT]):
    """The answer to one call, or its failure, kept by the task that makes the call until the
    answers before it were handled."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._answer: list[ReplyT] = []
        self._failure: Exception | None = None

    async def fill(
        self, call: Callable[[Sequence[ItemT]], Awaitable[ReplyT]], batch: Sequence[ItemT]
    ) -> None:
        try:
            self._answer.append(await call(batch))
        except Exception as error:  # handed over in order, by get()
            self._failure = error
        finally:
            self._done.set()

    async def get(self) -> ReplyT:
        await self._done.wait()
        if self._failure is not None:
            raise self._failure
        return self._answer[0]
