"""Benchmark of the first full sync an agent gets from a server just restarted with many entries.

Run from the repository root: ``.venv/bin/python tests/bench/bench_restart_sync.py`` (100,000
entries, 1,000 of them the agent's, by default; ``--entries`` and ``--agent-entries`` to
change them).

A real ``pyspire-server`` (SQLite datastore, disk key manager) is started; an agent attests
with a join token through the agent's own client (:class:`pyspire.agent.client.ServerClient`).
The server is stopped, the entries are written to its datastore (the agent's parented by its
ID, the rest spread over other parents), and the server is started again: it loads them all
into its registry cache, and no entry has an encoding cached. The agent's client then connects
over mutual TLS and is timed:

- **first full sync**: ``fetch_authorized_entries`` (SyncAuthorizedEntries: revisions, then
  the entries in pages, read back into SDK entries), the server encoding each entry for the
  first time;
- **second full sync**: the same again, the server's encodings now cached;
- **floor**: GetBundle on the same connection, an almost empty call, in the same run.

The aim is a first full sync within 50 ms of 1,000 entries: printed next to the figure and as
ratios to the floor, never asserted (benchmarks print, tests assert).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig
from pyspire_nodeattestor_join_token.plugin import AgentJoinTokenAttestor, AgentJoinTokenConfig

from pyspire.agent.client import ServerClient
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import make_host_services

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from processes import (
    TRUST_DOMAIN,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
)

TD = TrustDomain(TRUST_DOMAIN)
AIM_MS = 50.0
BATCH = 5_000


class AgentCredentials:
    """What the attested agent holds: its SVID chain and key, and the server's bundle."""

    def __init__(self, chain: tuple[bytes, ...], key: ec.EllipticCurvePrivateKey) -> None:
        self.chain = chain
        self.key = key
        self.bundle: Bundle | None = None

    def client(self, port: int) -> ServerClient:
        client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=self.bundle)
        client.use_identity(self.chain, self.key)
        return client


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def attest(port: int, token: str, directory: Path) -> tuple[SpiffeId, AgentCredentials]:
    """Attest as an agent with ``token``; its ID and credentials."""
    attestor = AgentJoinTokenAttestor()
    host = make_host_services(directory, plugin_name="join_token")
    await attestor.configure(AgentJoinTokenConfig(token=token), host)
    key = ec.generate_private_key(ec.SECP256R1())
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=None)
    try:
        result = await client.attest("join_token", attestor, _csr(key))
        credentials = AgentCredentials(result.svid.cert_chain, key)
        credentials.bundle = await client.fetch_bundle()
    finally:
        await client.close()
        await attestor.close()
    return result.svid.spiffe_id, credentials


def make_entries(count: int, agent_entries: int, agent: SpiffeId) -> list[RegistrationEntry]:
    """``agent_entries`` entries parented by ``agent``, the rest by 99 other agents."""
    entries = []
    for number in range(count):
        if number < agent_entries:
            parent = agent
        else:
            parent = SpiffeId.from_segments(TD, "spire", "agent", "x", f"node-{number % 99}")
        entries.append(
            RegistrationEntry(
                spiffe_id=SpiffeId.from_segments(TD, "ns", f"team-{number % 40}", f"app-{number}"),
                parent_id=parent,
                selectors=(
                    Selector("k8s", f"ns:team-{number % 40}"),
                    Selector("k8s", f"sa:app-{number}"),
                    Selector("k8s", "container-name:main"),
                ),
                x509_svid_ttl=3600,
                dns_names=(f"app-{number}.team-{number % 40}.svc.cluster.local",),
                hint=f"app-{number}",
            )
        )
    return entries


async def write_entries(database: Path, entries: list[RegistrationEntry]) -> None:
    """Store ``entries`` in the stopped server's datastore, in batches."""
    store = SqliteDataStore()
    host = make_host_services(database.parent, plugin_name="sqlite")
    await store.configure(SqliteDataStoreConfig(database_path=database), host)
    try:
        for start in range(0, len(entries), BATCH):
            for outcome in await store.create_entries(entries[start : start + BATCH]):
                if isinstance(outcome, Exception):
                    raise outcome
    finally:
        await store.close()


async def timed(action: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await action()
    return time.perf_counter() - started, result


async def measure(credentials: AgentCredentials, port: int, expected: int) -> dict[str, float]:
    """Seconds of the first and second full syncs and of the floor (p50 of 20 GetBundles)."""
    client = credentials.client(port)
    try:
        await client.fetch_bundle()  # connect and handshake: not part of the sync
        first, entries = await timed(client.fetch_authorized_entries)
        if len(entries) != expected:
            raise ProcessError(f"first sync gave {len(entries)} entries, expected {expected}")
        client.held_entries.clear()  # ask for every entry again, not only the changed ones
        second, entries = await timed(client.fetch_authorized_entries)
        if len(entries) != expected:
            raise ProcessError(f"second sync gave {len(entries)} entries, expected {expected}")
        floors = [(await timed(client.fetch_bundle))[0] for _ in range(20)]
    finally:
        await client.close()
    return {"first": first, "second": second, "floor": statistics.median(floors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=100_000, help="entries in the datastore")
    parser.add_argument("--agent-entries", type=int, default=1_000, help="entries of the agent")
    args = parser.parse_args(argv)

    root = short_temp_dir()
    settings = ServerSettings(root=root, port=free_port(), log_level="WARN")
    server = ServerProcess(settings)
    try:
        server.start()
        agent, credentials = asyncio.run(
            attest(settings.port, server.generate_token(), root / "agent")
        )
        server.terminate()
        started = time.perf_counter()
        entries = make_entries(args.entries, args.agent_entries, agent)
        asyncio.run(write_entries(settings.database_path, entries))
        written = time.perf_counter() - started
        started = time.perf_counter()
        server.start()
        restart = time.perf_counter() - started
        figures = asyncio.run(measure(credentials, settings.port, args.agent_entries))
        server.terminate()
    except ProcessError as error:
        print(f"benchmark failed: {error}\nserver log:\n{server.log()[-4000:]}", file=sys.stderr)
        return 1
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)

    floor = figures["floor"]
    print(f"{args.entries:,} entries in the datastore, {args.agent_entries:,} of them the agent's")
    print(f"  entries written (setup)         {written:8.2f} s")
    print(f"  server restart until serving    {restart:8.2f} s")
    print(f"  floor: GetBundle (p50 of 20)    {floor * 1e3:8.2f} ms")
    for name, label in (("first", "first full sync"), ("second", "second full sync")):
        seconds = figures[name]
        print(
            f"  {label:<31} {seconds * 1e3:8.2f} ms  {seconds / floor:7.1f}x floor"
            f"  (aim: {AIM_MS:g} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
