"""Batches that fit the server's limits, sent with the next call already on its way."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pyspire.cli.batches import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, batched, send_pipelined


def test_batches_are_cut_by_count() -> None:
    batches = list(batched(range(1200), lambda item: 1))
    assert [len(batch) for batch in batches] == [MAX_BATCH_ITEMS, MAX_BATCH_ITEMS, 200]
    assert [item for batch in batches for item in batch] == list(range(1200))


def test_batches_are_cut_by_encoded_size() -> None:
    sizes = [MAX_BATCH_BYTES // 3] * 7
    batches = list(batched(range(7), lambda index: sizes[index]))
    # Three items plus their framing exceed the budget: two per batch.
    assert [len(batch) for batch in batches] == [2, 2, 2, 1]


def test_an_item_larger_than_the_budget_travels_alone() -> None:
    sizes = [10, MAX_BATCH_BYTES * 2, 10]
    assert list(batched(range(3), lambda index: sizes[index])) == [[0], [1], [2]]


def test_items_are_measured_only_when_their_batch_is_asked_for() -> None:
    measured: list[int] = []

    def size_of(item: int) -> int:
        measured.append(item)
        return 1

    batches = batched(range(10), size_of, max_items=3)
    assert measured == []
    assert next(batches) == [0, 1, 2]
    assert measured == [0, 1, 2, 3]


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        list(batched([1], lambda item: 1, max_items=0))


async def test_answers_are_handled_in_order_with_a_bounded_window() -> None:
    in_flight = 0
    most = 0
    handled: list[tuple[list[int], str]] = []

    async def call(batch: Sequence[int]) -> str:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        # Later batches answer sooner: the order must still be the batches' order.
        await asyncio.sleep(0.01 * (10 - batch[0]))
        in_flight -= 1
        return f"reply {batch[0]}"

    await send_pipelined(
        [[number] for number in range(6)],
        call,
        lambda batch, reply: handled.append((list(batch), reply)),
        window=2,
    )
    assert handled == [([number], f"reply {number}") for number in range(6)]
    assert most == 2


async def test_a_failed_call_stops_after_the_answers_before_it() -> None:
    started: list[int] = []
    handled: list[int] = []
    cancelled: list[int] = []

    async def call(batch: Sequence[int]) -> int:
        started.append(batch[0])
        if batch[0] == 2:
            raise ConnectionError("the server went away")
        try:
            await asyncio.sleep(0.01 if batch[0] < 2 else 10)
        except asyncio.CancelledError:
            cancelled.append(batch[0])
            raise
        return batch[0]

    with pytest.raises(ConnectionError, match="went away"):
        await send_pipelined(
            [[number] for number in range(6)],
            call,
            lambda batch, reply: handled.append(reply),
            window=2,
        )
    assert handled == [0, 1]
    assert cancelled == [3]
    assert 5 not in started
