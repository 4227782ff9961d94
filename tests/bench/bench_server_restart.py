"""Server restart to serving with 100,000 entries and 50,000 attested agents, per datastore.

    .venv/bin/python tests/bench/bench_server_restart.py [--datastores sqlite,postgres]
        [--entries 100000] [--agents 50000] [--restarts 2]

For each datastore, named as in ``[server.plugins.datastore.<name>]``: a fresh database is
filled through the datastore plugin itself (``create_entries`` in batches of 1,000, then every
agent with ``create_attested_node`` and two selectors; entries are spread over the agents as
parents), a real ``pyspire-server`` is started on it once (making its CA) and stopped, then
restarted ``--restarts`` times; each restart is timed from launching the process to its health
check answering SERVING, which the server does only after loading the whole registry (every
entry, every agent's selectors) into memory. The best restart is reported.

The floor, measured in the same run on a second fresh database of the same datastore, is the
same restart with nothing stored: interpreter start-up, plugins, CA journal, listeners. The
ratio is what 100,000 entries and 50,000 agents add. Target: ≤ 10 s on each datastore.

A datastore is added by name in :data:`DATASTORES`: a function that yields the plugin's
settings for a fresh, empty database and removes it afterwards (MySQL: a throwaway database on
the local MariaDB). Everything else goes through the plugin's registration and the SDK's
``DataStore`` interface.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import structlog
from processes import ServerProcess, ServerSettings, free_port, short_temp_dir

from pyspire.catalog import DATASTORE, Discovery
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.config import load_config
from pyspire_sdk.model import AttestedNode, RegistrationEntry
from pyspire_sdk.plugins.datastore import DataStore
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import make_host_services

BATCH = 1000
NODE_WRITERS = 8
TARGET_SECONDS = 10.0

Settings = Mapping[str, Any]
FreshDatabase = Callable[[Path], AbstractAsyncContextManager[Settings]]


@asynccontextmanager
async def sqlite_database(root: Path) -> AsyncIterator[Settings]:
    """A new SQLite file under ``root`` (removed with it)."""
    yield {"database_path": str(root / "bench.sqlite3")}


@asynccontextmanager
async def postgres_database(root: Path) -> AsyncIterator[Settings]:
    """A throwaway schema on the local PostgreSQL, dropped afterwards."""
    from pyspire_datastore_postgres.testing import find_server, throwaway_schema

    server = await find_server()
    async with throwaway_schema(server, prefix="pyspire_restart") as dsn:
        yield {"connection_string": dsn, "max_open_conns": 16}


@asynccontextmanager
async def mysql_database(root: Path) -> AsyncIterator[Settings]:
    """A throwaway database on the local MariaDB, dropped afterwards."""
    from pyspire_datastore_mysql.testing import find_server, throwaway_database

    server = await find_server()
    async with throwaway_database(server, prefix="pyspire_restart") as dsn:
        yield {"connection_string": dsn, "max_open_conns": 16}


DATASTORES: dict[str, FreshDatabase] = {
    "sqlite": sqlite_database,
    "postgres": postgres_database,
    "mysql": mysql_database,
}
"""The datastores this benchmark knows, by plugin name: each yields the plugin's settings for a
fresh, empty database."""


def toml_table(name: str, settings: Settings) -> str:
    """``[server.plugins.datastore.<name>]`` with ``settings`` (strings and numbers)."""
    lines = [f"[server.plugins.datastore.{name}]"]
    for key, value in settings.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


async def open_datastore(name: str, settings: Settings, data_dir: Path) -> DataStore:
    """The datastore plugin ``name``, configured with ``settings`` as the server would."""
    discovered = Discovery.load().get(DATASTORE, name)
    if discovered is None:
        raise SystemExit(f"no datastore plugin {name!r} is installed")
    registration = discovered.registration
    config = load_config(
        registration.config_type, dict(settings), path=f"server.plugins.datastore.{name}"
    )
    datastore: DataStore = registration.factory()  # type: ignore[assignment]
    await datastore.configure(config, make_host_services(data_dir, clock=SystemClock()))
    return datastore


def agent_id(number: int) -> SpiffeId:
    return SpiffeId.parse(f"spiffe://example.org/spire/agent/bench/node-{number}")


async def fill(datastore: DataStore, entries: int, agents: int) -> None:
    """``entries`` entries under ``agents`` agents, and the agents with their selectors."""
    for start in range(0, entries, BATCH):
        batch = [
            RegistrationEntry(
                spiffe_id=SpiffeId.parse(f"spiffe://example.org/ns/team-{i % 50}/w/{i}"),
                parent_id=agent_id(i % agents),
                selectors=(Selector("k8s", f"ns:team-{i % 50}"), Selector("k8s", f"sa:w-{i}")),
                dns_names=(f"w-{i}.example.org",) if i % 3 == 0 else (),
            )
            for i in range(start, min(entries, start + BATCH))
        ]
        results = await datastore.create_entries(batch)
        failed = [r for r in results if not isinstance(r, RegistrationEntry)]
        if failed:
            raise SystemExit(f"filling failed: {failed[0]}")
    pending = iter(range(agents))

    async def writer() -> None:
        for number in pending:
            await datastore.create_attested_node(
                AttestedNode(
                    spiffe_id=agent_id(number),
                    attestation_type="bench",
                    x509_svid_serial_number=f"{number:x}",
                    selectors=(
                        Selector("bench", f"node:{number}"),
                        Selector("bench", f"rack:{number % 40}"),
                    ),
                )
            )

    await asyncio.gather(*(writer() for _ in range(NODE_WRITERS)))


def time_restarts(root: Path, table: str, restarts: int) -> tuple[float, float]:
    """The first start (CA made) and the best of ``restarts`` restarts, in seconds, from
    launch to SERVING."""
    server = ServerProcess(ServerSettings(root=root, port=free_port(), datastore=table))
    try:
        began = time.monotonic()
        server.start()
        first = time.monotonic() - began
        server.terminate()
        best = float("inf")
        for _ in range(restarts):
            began = time.monotonic()
            server.start()
            best = min(best, time.monotonic() - began)
            server.terminate()
        return first, best
    finally:
        server.kill()


async def measure(name: str, entries: int, agents: int, restarts: int) -> None:
    fresh = DATASTORES[name]
    root = short_temp_dir()
    try:
        (root / "empty").mkdir()
        async with fresh(root / "empty") as settings:
            _, floor = await asyncio.to_thread(
                time_restarts, root / "empty", toml_table(name, settings), restarts
            )
        (root / "full").mkdir()
        async with fresh(root / "full") as settings:
            began = time.monotonic()
            datastore = await open_datastore(name, settings, root / "full")
            try:
                await fill(datastore, entries, agents)
            finally:
                await datastore.close()
            filled = time.monotonic() - began
            first, best = await asyncio.to_thread(
                time_restarts, root / "full", toml_table(name, settings), restarts
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{name}: filled {entries:,} entries and {agents:,} agents in {filled:.0f} s")
    print(f"{name}: restart with nothing stored (floor): {floor:.2f} s")
    print(
        f"{name}: first start {first:.2f} s; restart to serving {best:.2f} s, "
        f"ratio to floor {best / floor:.2f} "
        f"({'within' if best <= TARGET_SECONDS else 'OVER'} the {TARGET_SECONDS:g} s target)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datastores", default=",".join(DATASTORES))
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=50_000)
    parser.add_argument("--restarts", type=int, default=2)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    names = [name.strip() for name in args.datastores.split(",") if name.strip()]
    unknown = [name for name in names if name not in DATASTORES]
    if unknown:
        raise SystemExit(f"unknown datastores {unknown}; known: {sorted(DATASTORES)}")
    for name in names:
        asyncio.run(measure(name, args.entries, args.agents, args.restarts))


if __name__ == "__main__":
    main()
