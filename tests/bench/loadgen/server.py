"""The real ``pyspire-server`` processes a run loads, on SQLite or on a throwaway PostgreSQL
schema, started through the end-to-end process harness (``tests/e2e/processes.py``).

With ``--servers`` above 1 they share one port (``reuse_port``: the kernel hands each new
connection to one of them) and one datastore (with SQLite, one file in WAL mode), each with
its own data directory, admin socket and CA."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from processes import ServerProcess, ServerSettings, free_port

from .options import LoadOptions

GC_PAUSES = Path(__file__).resolve().parents[1] / "gc_pauses.py"

RPC_COUNTER_PREFIX = "pyspire_server_rpc_"
"""The server's call counters (``rpc.<service>.<method>``, SPIRE's names) as scraped."""


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


class ProbedServer(ServerProcess):
    """``pyspire-server run`` started through ``gc_pauses.py``: its collections and its event
    loop's lag are read with :meth:`stalls`. ``collector`` ``cpython`` gives it CPython's
    thresholds and no freeze."""

    def __init__(self, settings: ServerSettings, collector: str, metrics_port: int) -> None:
        super().__init__(settings)
        self.stats_path = settings.root / "server-stalls.json"
        self.collector = collector
        self.metrics_port = metrics_port

    def calls(self) -> Counter[str]:
        """Calls the server answered so far, by method (SPIRE's metric name, shortened) and
        status, e.g. ``agent_v1_agent_attest_agent OK``: scraped from its Prometheus endpoint,
        which the server's call counters feed whether or not it is scraped."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            name, _, rest = line.partition("{")
            if not (name.startswith(RPC_COUNTER_PREFIX) and name.endswith("_total")):
                continue
            labels, _, value = rest.rpartition("}")
            status = labels.partition('status="')[2].partition('"')[0]
            method = name.removeprefix(RPC_COUNTER_PREFIX).removesuffix("_total")
            counts[f"{method} {status}"] += int(float(value))
        return counts

    def launch(self, env: object = None) -> None:
        environment = dict(os.environ)
        if self.collector == "cpython":
            environment["PYSPIRE_BENCH_GC_THRESHOLDS"] = "700,10,10"
            environment["PYSPIRE_BENCH_GC_FREEZE"] = "0"
        if self.collector != "tuned":
            environment["PYSPIRE_BENCH_GC_SWEEP"] = "0"
        argv = [sys.executable, str(GC_PAUSES), str(self.stats_path), "server"]
        self.spawn([*argv, "run", "-config", str(self.config)], environment)

    def stalls(self) -> dict[str, object]:
        """The collections and the loop's lag since the last call."""
        self.stats_path.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.stats_path.exists():
                stats: dict[str, object] = json.loads(self.stats_path.read_text())
                return stats
            time.sleep(0.05)
        raise RuntimeError("the server wrote no collector statistics")

    def walks(self) -> dict[str, object]:
        """What a middle and then a full collection of the server cost now (it runs both)."""
        path = self.stats_path.with_suffix(".walks.json")
        path.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists():
                walks: dict[str, object] = json.loads(path.read_text())
                return walks
            time.sleep(0.05)
        raise RuntimeError("the server wrote no collection costs")


def load_servers(root: Path, options: LoadOptions, datastore: str) -> list[ProbedServer]:
    """The run's servers (not started) with its SVID lifetimes, logging warnings only."""
    port = free_port()
    if options.servers == 1:
        return [_server(root, port, options, datastore, "")]
    shared = datastore or (
        f'[server.plugins.datastore.sqlite]\ndatabase_path = "{root / "datastore.sqlite3"}"'
    )
    return [
        _server(root / f"server-{index}", port, options, shared, "reuse_port = true")
        for index in range(options.servers)
    ]


def _server(
    root: Path, port: int, options: LoadOptions, datastore: str, extra: str
) -> ProbedServer:
    root.mkdir(exist_ok=True)
    metrics_port = free_port()
    prometheus = f'[server.telemetry.Prometheus]\nhost = "127.0.0.1"\nport = {metrics_port}\n'
    return ProbedServer(
        ServerSettings(
            root=root,
            port=port,
            log_level=options.server_log_level,
            default_x509_svid_ttl=f"{options.svid_ttl}s",
            agent_ttl=f"{options.agent_ttl}s",
            datastore=datastore,
            extra=f"{extra}\n{prometheus}",
        ),
        options.server_collector,
        metrics_port,
    )
