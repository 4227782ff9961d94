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
from pyspire_sdk.sql_datastore import SqlTransaction

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


class Transaction(SqlTransaction[Any]):
    """An open write transaction on MySQL (see :class:`~pyspire_sdk.sql_datastore.SqlTransaction`),
    its savepoints named ``sp1``, ``sp2``, ... in the order they are taken."""

    __slots__ = ("_savepoints",)

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self._savepoints = 0

    @asynccontextmanager
    async def _nested(self) -> AsyncIterator[None]:
        """A deadlock is not rolled back to the savepoint: InnoDB has already rolled back the
        whole transaction; nor is a connection that broke."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        await execute(self.connection, f"SAVEPOINT {name}")
        try:
            yield
        except Exception as error:
            code = server_error_code(error)
            broken = isinstance(error, OSError) or (isinstance(error, MySQLError) and code is None)
            if not broken and code != DEADLOCK:
                await execute(self.connection, f"ROLLBACK TO SAVEPOINT {name}")
            raise
        await execute(self.connection, f"RELEASE SAVEPOINT {name}")
