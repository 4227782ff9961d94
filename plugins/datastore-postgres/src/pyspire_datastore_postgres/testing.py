"""Throwaway schemas on a local PostgreSQL server, for tests and benchmarks.

Tests of this plugin (and of anything that runs it) share one server with other test runs, so
each test works in a schema of its own, named at random and dropped afterwards. Where no server
answers, :func:`find_server` says why, so a test can skip with that reason.
"""

from __future__ import annotations

__all__ = ["SERVER_DSNS", "ServerUnavailableError", "find_server", "throwaway_schema"]

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

SERVER_DSNS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)
"""Where tests look for a server: database ``test`` on 127.0.0.1:5432 with trust
authentication, as user ``postgres`` or ``root``."""


class ServerUnavailableError(Exception):
    """No PostgreSQL server for tests answered; the message says what each attempt found."""


async def find_server() -> str:
    """The first of :data:`SERVER_DSNS` that accepts a connection."""
    problems: list[str] = []
    for dsn in SERVER_DSNS:
        try:
            connection = await asyncpg.connect(dsn, timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            problems.append(f"{dsn}: {type(error).__name__}: {error}")
            continue
        await connection.close()
        return dsn
    raise ServerUnavailableError("no PostgreSQL server for tests: " + "; ".join(problems))


@asynccontextmanager
async def throwaway_schema(server: str, prefix: str = "pyspire_test") -> AsyncIterator[str]:
    """A new empty schema on ``server``; yields a connection string whose ``search_path`` is
    that schema, and drops the schema with everything in it on exit."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server, timeout=5)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await admin.close()
    try:
        yield f"{server}?search_path={schema}"
    finally:
        admin = await asyncpg.connect(server, timeout=5)
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await admin.close()
