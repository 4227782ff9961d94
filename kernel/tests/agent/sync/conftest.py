"""Fixtures for the sync manager and cache tests: a fake server, a cache and a sync manager,
all on the fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.sync import SyncManager
from pyspire_sdk.testing import FakeClock

from .fakes import FakeServerApi


@pytest.fixture
def server(fake_clock: FakeClock) -> FakeServerApi:
    return FakeServerApi(fake_clock)


@pytest.fixture
async def cache(server: FakeServerApi, fake_clock: FakeClock) -> AsyncIterator[WorkloadCache]:
    workload_cache = WorkloadCache(server, fake_clock)
    yield workload_cache
    await workload_cache.close()


@pytest.fixture
def manager(server: FakeServerApi, cache: WorkloadCache, fake_clock: FakeClock) -> SyncManager:
    return SyncManager(server, cache, fake_clock, interval=5)


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (in real time, bounded) until ``predicate`` holds: for work done in worker threads,
    such as key generation, which the fake clock does not drive."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the condition has no event to wait on
            await asyncio.sleep(0.001)
