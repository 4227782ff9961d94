"""The transaction skeleton of SQL datastores: a savepoint that rolls back takes the change
events recorded inside it along. (The entry writes on top of it are tested against real
servers by the ``postgres`` and ``mysql`` plugins' contract suites.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from pyspire_sdk.plugins.datastore import ChangeKind
from pyspire_sdk.sql_datastore import SqlTransaction


class _Recording(SqlTransaction[list[str]]):
    """A transaction whose "connection" records what the database would be told."""

    __slots__ = ()

    @asynccontextmanager
    async def _nested(self) -> AsyncIterator[None]:
        self.connection.append("savepoint")
        try:
            yield
        except Exception:
            self.connection.append("rollback to savepoint")
            raise
        self.connection.append("release savepoint")


async def test_events_of_a_savepoint_that_rolls_back_are_dropped() -> None:
    transaction = _Recording([])
    transaction.event(ChangeKind.ENTRY, ["kept"])

    async def failing() -> None:
        async with transaction.savepoint():
            transaction.event(ChangeKind.ENTRY, ["dropped"])
            raise LookupError

    with pytest.raises(LookupError):
        await failing()
    async with transaction.savepoint():
        transaction.event(ChangeKind.NODE, ["released"])
    assert transaction.events == [("entry", "kept"), ("node", "released")]
    assert transaction.connection == [
        "savepoint",
        "rollback to savepoint",
        "savepoint",
        "release savepoint",
    ]


async def test_a_transaction_without_a_savepoint_of_its_database_says_so() -> None:
    transaction: SqlTransaction[None] = SqlTransaction(None)

    async def enter() -> None:
        async with transaction.savepoint():
            pass

    with pytest.raises(NotImplementedError):
        await enter()
