"""Sessions: opening a connection as the store needs it, transactions, and driver errors.

Every session runs at READ COMMITTED (as PostgreSQL's default, so a locking read sees the
latest committed row and no gap locks are taken), in strict SQL mode, with the configured
statement timeout; a replica's sessions are read-only.
"""

from __future__ import annotations

__all__ = [
    "DEADLOCK",
    "Transaction",
    "execute",
    "executemany",
    "fetch",
    "open_connection",
]

import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncmy
from asyncmy.errors import MySQLError

from pyspire_datastore_mysql.connection import ConnectionTarget, statement_timeout_sql
from pyspire_datastore_mysql.pool import server_error_code
from pyspire_sdk.plugins.datastore import ChangeKind

DEADLOCK = 1213
"""InnoDB chose this transaction as a deadlock's victim and rolled it back whole."""

_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ONLY_FULL_GROUP_BY"


async def fetch(connection: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one statement (``%s`` placeholders)."""
    async with connection.cursor() as cursor:
        await cursor.execute(sql, tuple(params) if params else None)
        return list(await cursor.fetchall())


async def execute(connection: Any, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one statement; the number of rows it changed."""
    async with connection.cursor() as cursor:
        return int(await cursor.execute(sql, tuple(params) if params else None))


async def executemany(connection: Any, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    """Run one statement for many rows (an ``INSERT ... VALUES`` goes as one multi-row
    statement)."""
    batch = [tuple(row) for row in rows]
    if batch:
        async with connection.cursor() as cursor:
            await cursor.executemany(sql, batch)


async def open_connection(
    target: ConnectionTarget,
    context: ssl.SSLContext | None,
    *,
    statement_timeout: float,
    read_only: bool,
) -> Any:
    """A new connection to ``target``, its session set up (autocommit on between
    transactions)."""
    options: dict[str, Any] = {
        "user": target.user,
        "password": target.password,
        "database": target.database,
        "connect_timeout": target.connect_timeout,
        "charset": "utf8mb4",
        "autocommit": True,
        "ssl": context,
        "program_name": "pyspire-server",
    }
    if target.unix_socket is not None:
        options["unix_socket"] = target.unix_socket
    else:
        options["host"], options["port"] = target.host, target.port
    connection = await asyncmy.connect(**options)
    try:
        await execute(connection, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        if read_only:
            await execute(connection, "SET SESSION TRANSACTION READ ONLY")
        await execute(connection, f"SET SESSION sql_mode = '{_SQL_MODE}', time_zone = '+00:00'")
        await execute(connection, statement_timeout_sql(connection, statement_timeout))
    except BaseException:
        connection.close()
        raise
    return connection


class Transaction:
    """An open write transaction: its connection and the change events it will append when it
    commits (events of a savepoint that rolls back are dropped with it)."""

    __slots__ = ("_savepoints", "connection", "events")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.events: list[tuple[str, str]] = []
        self._savepoints = 0

    def event(self, kind: ChangeKind, object_ids: Iterable[str]) -> None:
        self.events.extend((kind.value, object_id) for object_id in object_ids)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: rolled back alone when its block raises. A deadlock is not
        rolled back to the savepoint: InnoDB has already rolled back the whole transaction."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        mark = len(self.events)
        await execute(self.connection, f"SAVEPOINT {name}")
        try:
            yield
        except Exception as error:
            code = server_error_code(error)
            broken = isinstance(error, OSError) or (isinstance(error, MySQLError) and code is None)
            if not broken and code != DEADLOCK:
                await execute(self.connection, f"ROLLBACK TO SAVEPOINT {name}")
                del self.events[mark:]
            raise
        await execute(self.connection, f"RELEASE SAVEPOINT {name}")
