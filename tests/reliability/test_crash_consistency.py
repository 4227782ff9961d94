"""The server is killed with SIGKILL in the middle of writing, and must come back whole.

Entry creates: 1,000 concurrent BatchCreateEntry calls over the admin socket, the server killed
once a third of them were acknowledged (the full form runs ten such rounds on the same database,
killing at a different point each time). After a restart every acknowledged entry is there with
its selector, and SQLite's integrity and foreign-key checks are clean, both on the files as the
kill left them and after the restart.

Migrations: for every schema version ``n``, a database at version ``n - 1`` is migrated by a
server that pauses inside the migration to ``n`` (the sqlite plugin's
``PYSPIRE_SQLITE_PAUSE_IN_MIGRATION`` hook) and is killed there: the database must still hold
exactly version ``n - 1``, and the next start must bring it to the current version. A database
from a newer release is refused and left untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from figures import Figures
from forms import by_form
from grpclib.const import Status
from processes import (
    START_TIMEOUT,
    TRUST_DOMAIN,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
)
from pyspire_datastore_sqlite.schema import MIGRATIONS, PAUSE_ENV, SCHEMA_VERSION

from pyspire.cli.admin_client import AdminClient, connect
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CREATES = 1000
CONNECTIONS = 10
"""Each connection carries at most 100 calls at once (the HTTP/2 stream limit)."""
ANSWER_GRACE = 1.0
PARENT = pb.Spiffeid(trust_domain=TRUST_DOMAIN, path="/spire/server")


KILL_POINTS = by_form(
    quick=(0.33,),
    full=(0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.4, 0.6, 0.8, 0.95),
)
"""One round per value: the server is killed once this fraction of the creates was answered."""


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    root = short_temp_dir()
    process = ServerProcess(ServerSettings(root=root, port=free_port()))
    try:
        yield process
    finally:
        process.kill()
        shutil.rmtree(root, ignore_errors=True)


# -- SQLite checks -----------------------------------------------------------------------------


def _database_copy(database: Path, into: Path) -> Path:
    """The database with its -wal and -shm files as they are now, copied to ``into``, so it
    can be checked without recovering the original before the server does."""
    into.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{database}{suffix}")
        if source.exists():
            shutil.copyfile(source, into / f"{database.name}{suffix}")
    return into / database.name


def _open(database: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(database, isolation_level=None))


def _dump(database: Path) -> list[str]:
    """Every statement that recreates the database: its whole content, comparable."""
    with _open(database) as connection:
        return list(connection.iterdump())


def _integrity(database: Path) -> list[str]:
    """What SQLite's integrity and foreign-key checks find wrong; empty when clean."""
    with _open(database) as connection:
        problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        foreign = connection.execute("PRAGMA foreign_key_check").fetchall()
    return [p for p in problems if p != "ok"] + [f"foreign key: {row}" for row in foreign]


def _schema(database: Path) -> tuple[int, frozenset[str]]:
    """The recorded schema version (0 when none) and the names of every table and index."""
    with _open(database) as connection:
        names = frozenset(
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
        )
        version = 0
        if "schema_version" in names:
            rows = connection.execute("SELECT version FROM schema_version").fetchall()
            version = rows[0][0] if rows else 0
    return version, names - {"schema_version"}


def _database_at(database: Path, version: int) -> None:
    """Make ``database`` a database of schema ``version``, as that release left it."""
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _open(database) as connection:
        if version:
            connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        for statements in MIGRATIONS[:version]:
            for statement in statements:
                connection.execute(statement)
    database.chmod(0o600)


def _tables_of(version: int, scratch: Path) -> frozenset[str]:
    path = scratch / f"v{version}.sqlite3"
    _database_at(path, version)
    return _schema(path)[1]


# -- concurrent creates ------------------------------------------------------------------------


@dataclass
class Round:
    sent: int = 0
    acknowledged: dict[str, str] = field(default_factory=dict)
    """Entry ID → the selector value it was created with, for every OK answer received."""
    refused: int = 0
    broken: int = 0


def _entry(number: int, round_number: int) -> pb.Entry:
    return pb.Entry(
        spiffe_id=pb.Spiffeid(trust_domain=TRUST_DOMAIN, path=f"/crash/{round_number}/{number}"),
        parent_id=PARENT,
        selectors=[pb.Selector(type="unix", value=f"uid:{round_number * CREATES + number}")],
    )


async def _create_until_killed(server: ServerProcess, round_number: int, kill_after: int) -> Round:
    """Send :data:`CREATES` creates at once over :data:`CONNECTIONS` connections; SIGKILL the
    server once ``kill_after`` were acknowledged. Answers already on their way get
    :data:`ANSWER_GRACE` seconds to arrive; calls still waiting then are abandoned (a call
    that never got its answer is not an acknowledged write)."""
    result = Round()
    killed = asyncio.Event()

    async def create(client: AdminClient, number: int) -> None:
        entry = _entry(number, round_number)
        result.sent += 1
        try:
            answer = await client.entry.batch_create_entry(
                entry_pb.BatchCreateEntryRequest(entries=[entry])
            )
        except Exception:
            result.broken += 1
            return
        [item] = answer.results
        if item.status.code == Status.OK.value and item.entry.id:
            result.acknowledged[item.entry.id] = entry.selectors[0].value
            if len(result.acknowledged) >= kill_after and not killed.is_set():
                os.kill(server.pid, signal.SIGKILL)
                killed.set()
        else:
            result.refused += 1

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(connect(server.socket_path)) for _ in range(CONNECTIONS)
        ]
        calls = [asyncio.create_task(create(clients[n % CONNECTIONS], n)) for n in range(CREATES)]
        watchers: list[asyncio.Task[Any]] = [
            asyncio.create_task(killed.wait()),
            asyncio.create_task(asyncio.wait(calls)),
        ]
        await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        for watcher in watchers:
            watcher.cancel()
        _, waiting = await asyncio.wait(calls, timeout=ANSWER_GRACE)
        for call in waiting:
            call.cancel()
        result.broken += len(waiting)
        await asyncio.gather(*calls, return_exceptions=True)
    return result


async def _stored_entries(server: ServerProcess) -> dict[str, list[str]]:
    """Entry ID → selector values of every entry the server lists."""
    found: dict[str, list[str]] = {}
    async with connect(server.socket_path) as client:
        token = ""
        while True:
            page = await client.entry.list_entries(
                entry_pb.ListEntriesRequest(page_size=500, page_token=token)
            )
            for entry in page.entries:
                found[entry.id] = [f"{s.type}:{s.value}" for s in entry.selectors]
            token = page.next_page_token
            if not token:
                return found


def test_kill_during_concurrent_entry_creates(server: ServerProcess, figures: Figures) -> None:
    database = server.settings.database_path
    acknowledged: dict[str, str] = {}
    rounds = []
    problems_after_kill: list[str] = []
    for round_number, fraction in enumerate(KILL_POINTS):
        server.start()
        kill_after = int(CREATES * fraction)
        outcome = asyncio.run(_create_until_killed(server, round_number, kill_after))
        server.kill()
        rounds.append(outcome)
        acknowledged.update(outcome.acknowledged)
        copy = _database_copy(database, server.settings.root / f"killed-{round_number}")
        problems_after_kill += _integrity(copy)
    server.start()
    stored = asyncio.run(_stored_entries(server))
    assert server.terminate() == 0, server.log()
    missing = sorted(set(acknowledged) - set(stored))
    damaged = sorted(
        entry_id
        for entry_id, value in acknowledged.items()
        if entry_id in stored and stored[entry_id] != [f"unix:{value}"]
    )
    problems_after_restart = _integrity(database)
    figures.add(
        rounds=len(rounds),
        sent=sum(r.sent for r in rounds),
        acknowledged=len(acknowledged),
        broken_by_kill=sum(r.broken for r in rounds),
        refused=sum(r.refused for r in rounds),
        stored=len(stored),
        stored_unacknowledged=len(set(stored) - set(acknowledged)),
        missing=len(missing),
        damaged=len(damaged),
        integrity_after_kill="ok" if not problems_after_kill else len(problems_after_kill),
        integrity_after_restart="ok" if not problems_after_restart else len(problems_after_restart),
    )
    figures.report()

    assert all(r.refused == 0 for r in rounds), "the server refused creates before the kill"
    assert all(r.broken > 0 for r in rounds), "the kill came after every create had finished"
    assert not missing, f"{len(missing)} acknowledged entries are gone: {missing[:5]}"
    assert not damaged, f"{len(damaged)} acknowledged entries lost their selector: {damaged[:5]}"
    assert not problems_after_kill, problems_after_kill[:10]
    assert not problems_after_restart, problems_after_restart[:10]


# -- migrations --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_kill_inside_a_schema_migration(
    server: ServerProcess, figures: Figures, version: int
) -> None:
    database = server.settings.database_path
    scratch = server.settings.root / "scratch"
    scratch.mkdir()
    if version > 1:
        _database_at(database, version - 1)

    server.launch({PAUSE_ENV: str(version)})
    server.wait_for_log("migration paused", START_TIMEOUT)
    server.kill()
    killed = _database_copy(database, scratch / "killed")
    found_version, found_tables = _schema(killed)
    problems = _integrity(killed)

    server.start()
    migrated_version, migrated_tables = _schema(database)
    assert server.terminate() == 0, server.log()
    figures.add(
        step=f"{version - 1}->{version}",
        after_kill_version=found_version,
        after_restart_version=migrated_version,
        integrity="ok" if not problems else len(problems),
    )
    figures.report()

    assert found_version == version - 1
    assert found_tables == _tables_of(version - 1, scratch)
    assert not problems, problems
    assert migrated_version == SCHEMA_VERSION
    assert migrated_tables == _tables_of(SCHEMA_VERSION, scratch)
    assert not _integrity(database)


def test_a_newer_schema_is_refused(server: ServerProcess, figures: Figures) -> None:
    database = server.settings.database_path
    server.start()
    assert server.terminate() == 0, server.log()
    with _open(database) as connection:
        connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    before = _dump(database)

    server.launch()
    code = server.wait(timeout=START_TIMEOUT)
    log = server.log()
    figures.add(exit_code=code, newer_version=SCHEMA_VERSION + 1)
    figures.report()

    assert code != 0, log
    assert f"schema version {SCHEMA_VERSION + 1} is newer" in log
    assert _dump(database) == before
    assert _schema(database)[0] == SCHEMA_VERSION + 1
    assert not _integrity(database)
