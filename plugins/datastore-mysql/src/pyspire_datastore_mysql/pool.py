"""A small connection pool with SPIRE's (Go's ``database/sql``) semantics.

asyncmy's own pool retires connections by idle time only; the settings promise more:
``max_open_conns`` bounds the connections open at once, ``max_idle_conns`` how many are kept
when released (one released while that many are idle is closed), and ``conn_max_lifetime``
how long one connection is reused, measured on the host clock. A connection whose use ended
in a cancellation, a lost connection or any other failure of the client is closed rather than
reused, since its state is unknown; one whose use ended in an error the server reported, or in
a :class:`~pyspire_sdk.errors.PyspireError` the store raised after rolling back, is reused.
"""

from __future__ import annotations

__all__ = ["ConnectionPool", "PoolClosedError", "server_error_code"]

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from asyncmy.errors import MySQLError

from pyspire_sdk.errors import PyspireError

_CLIENT_ERRORS = 2000
"""Error numbers from 2000 on are the client's (lost connection, cannot connect...); below are
the server's, after which the connection is still in a known state."""


class PoolClosedError(Exception):
    """The pool was closed: no connection is handed out any more."""


def server_error_code(error: BaseException) -> int | None:
    """The server's error number when ``error`` is an error the server reported, else ``None``."""
    if isinstance(error, MySQLError) and error.args and isinstance(error.args[0], int):
        code: int = error.args[0]
        return code if code < _CLIENT_ERRORS else None
    return None


class ConnectionPool:
    """Connections made by ``connect``, at most ``max_open`` at once."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        max_open: int,
        max_idle: int,
        max_lifetime: timedelta,
        now: Callable[[], datetime],
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(max_open)
        self._max_idle = max_idle
        self._max_lifetime = max_lifetime
        self._now = now
        self._idle: deque[tuple[Any, datetime]] = deque()
        self._closed = False

    async def open(self) -> None:
        """Make one connection now, so a database that cannot be reached fails the start."""
        async with self.acquire():
            pass

    def _expired(self, opened: datetime) -> bool:
        return bool(self._max_lifetime) and self._now() - opened >= self._max_lifetime

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """A connection for the block's length; raises :class:`PoolClosedError` once closed."""
        if self._closed:
            raise PoolClosedError("the connection pool is closed")
        async with self._slots:
            connection, opened = None, self._now()
            while self._idle and connection is None:
                candidate, candidate_opened = self._idle.popleft()
                if self._expired(candidate_opened):
                    candidate.close()
                else:
                    connection, opened = candidate, candidate_opened
            if connection is None:
                connection = await self._connect()
            reusable = False
            try:
                yield connection
                reusable = True
            except BaseException as error:
                reusable = server_error_code(error) is not None or isinstance(error, PyspireError)
                raise
            finally:
                if (
                    reusable
                    and not self._closed
                    and len(self._idle) < self._max_idle
                    and not self._expired(opened)
                ):
                    self._idle.append((connection, opened))
                else:
                    connection.close()

    async def close(self) -> None:
        """Close the idle connections; those in use close when released."""
        self._closed = True
        while self._idle:
            connection, _ = self._idle.popleft()
            connection.close()
