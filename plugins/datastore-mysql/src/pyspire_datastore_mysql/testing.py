"""Throwaway databases on a local MariaDB (or MySQL) server, for tests and benchmarks.

Tests of this plugin (and of anything that runs it) share one server with other test runs, so
each test works in a database of its own, named at random and dropped afterwards. Where no
server answers, :func:`find_server` says why, so a test can skip with that reason.
"""

from __future__ import annotations

__all__ = ["SERVER_DSN", "ServerUnavailableError", "find_server", "throwaway_database"]

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncmy
from asyncmy.errors import MySQLError

SERVER_DSN = "root@tcp(127.0.0.1:3306)/"
"""Where tests look for a server: 127.0.0.1:3306, user ``root`` with an empty password (a
database name is appended)."""


class ServerUnavailableError(Exception):
    """No MariaDB or MySQL server for tests answered; the message says what was found."""


async def _admin() -> asyncmy.Connection:
    return await asyncmy.connect(
        host="127.0.0.1", port=3306, user="root", autocommit=True, connect_timeout=5
    )


async def find_server() -> str:
    """:data:`SERVER_DSN` once a server accepts a connection there."""
    try:
        connection = await _admin()
    except (OSError, TimeoutError, MySQLError) as error:
        raise ServerUnavailableError(
            f"no MariaDB/MySQL server for tests at {SERVER_DSN}: {type(error).__name__}: {error}"
        ) from None
    connection.close()
    return SERVER_DSN


@asynccontextmanager
async def throwaway_database(server: str, prefix: str = "pyspire_test") -> AsyncIterator[str]:
    """A new empty database on ``server``; yields a connection string naming it, and drops the
    database with everything in it on exit."""
    database = f"{prefix}_{secrets.token_hex(6)}"
    admin = await _admin()
    try:
        async with admin.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE `{database}`")
    finally:
        admin.close()
    try:
        yield f"{server}{database}"
    finally:
        admin = await _admin()
        try:
            async with admin.cursor() as cursor:
                await cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
        finally:
            admin.close()
