"""The connection pool's promises, on fake connections: at most ``max_open`` at once, at most
``max_idle`` kept, none past its lifetime, none reused after an unknown state."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from asyncmy.errors import IntegrityError, OperationalError
from pyspire_datastore_mysql.pool import ConnectionPool, PoolClosedError

from pyspire_sdk.errors import NotFoundError
from pyspire_sdk.testing.fake_clock import FakeClock


class FakeConnection:
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Opened:
    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []

    async def __call__(self) -> FakeConnection:
        connection = FakeConnection(len(self.connections))
        self.connections.append(connection)
        return connection

    @property
    def open(self) -> int:
        return sum(not connection.closed for connection in self.connections)


def _pool(opened: Opened, clock: FakeClock, **settings: Any) -> ConnectionPool:
    options: dict[str, Any] = {"max_open": 3, "max_idle": 1, "max_lifetime": timedelta(0)}
    options.update(settings)
    return ConnectionPool(opened, now=clock.now, **options)


async def test_at_most_max_open_at_once_and_max_idle_kept(fake_clock: FakeClock) -> None:
    opened = Opened()
    pool = _pool(opened, fake_clock)
    inside = 0
    most = 0
    release = asyncio.Event()

    async def use() -> None:
        nonlocal inside, most
        async with pool.acquire():
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(use()) for _ in range(8)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert (most, opened.open) == (3, 3)
    release.set()
    await asyncio.gather(*tasks)
    assert most == 3 and opened.open == 1  # the others closed on release
    async with pool.acquire() as connection:
        assert not connection.closed
    assert opened.open == 1
    await pool.close()
    assert opened.open == 0
    with pytest.raises(PoolClosedError):
        async with pool.acquire():
            pass


async def test_a_connection_is_replaced_after_its_lifetime(fake_clock: FakeClock) -> None:
    opened = Opened()
    pool = _pool(opened, fake_clock, max_lifetime=timedelta(minutes=5))
    async with pool.acquire() as first:
        pass
    await fake_clock.advance(timedelta(minutes=4))
    async with pool.acquire() as again:
        assert again is first
        await fake_clock.advance(timedelta(minutes=1))
    assert first.closed  # released past its lifetime
    async with pool.acquire() as fresh:
        assert fresh is not first


@pytest.mark.parametrize(
    ("error", "reused"),
    [
        (IntegrityError(1062, "duplicate"), True),
        (OperationalError(1213, "deadlock"), True),
        (OperationalError(2013, "lost connection"), False),
        (asyncio.CancelledError(), False),
        (OSError("reset"), False),
        (NotFoundError("raised by the store, rolled back"), True),
        (ValueError("not the database's"), False),
    ],
)
async def test_only_connections_in_a_known_state_are_reused(
    fake_clock: FakeClock, error: BaseException, reused: bool
) -> None:
    opened = Opened()
    pool = _pool(opened, fake_clock)
    with pytest.raises(type(error)):
        async with pool.acquire() as connection:
            raise error
    assert connection.closed is not reused
    async with pool.acquire() as after:
        assert (after is connection) is reused
