"""The real ``pyspire-server`` process a run loads, on SQLite or on a throwaway PostgreSQL
schema, started through the end-to-end process harness (``tests/e2e/processes.py``)."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from processes import ServerProcess, ServerSettings, free_port

from .options import LoadOptions


async def _postgres_schema() -> tuple[str, str]:
    import asyncpg
    from pyspire_datastore_postgres.testing import find_server

    dsn = await find_server()
    schema = f"pyspire_load_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await admin.close()
    return dsn, schema


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await admin.close()


@contextmanager
def datastore_table(options: LoadOptions) -> Iterator[str]:
    """The server's datastore table: "" (SQLite in the server's directory, the harness's
    default) or PostgreSQL in a new schema, dropped afterwards."""
    if options.datastore == "sqlite":
        yield ""
        return
    dsn, schema = asyncio.run(_postgres_schema())
    try:
        yield (
            "[server.plugins.datastore.postgres]\n"
            f'connection_string = "{dsn}?search_path={schema}"\n'
        )
    finally:
        asyncio.run(_drop_schema(dsn, schema))


def load_server(root: Path, options: LoadOptions, datastore: str) -> ServerProcess:
    """A server (not started) with the run's SVID lifetimes, logging warnings only."""
    return ServerProcess(
        ServerSettings(
            root=root,
            port=free_port(),
            log_level="WARN",
            default_x509_svid_ttl=f"{options.svid_ttl}s",
            agent_ttl=f"{options.agent_ttl}s",
            datastore=datastore,
        )
    )
