"""Workload SVID issuance through a TCP load balancer: two servers against one, in one run.

    .venv/bin/python tests/bench/bench_two_servers.py [--agents 4] [--batches 60]
        [--batch-size 50] [--in-flight 2] [--rounds 3]

Two real ``pyspire-server`` processes share a throwaway PostgreSQL schema. ``--agents`` agents
attest with join tokens through the proxy (:mod:`tcp_proxy`), each gets ``--batch-size``
entries, and each then runs in its own process, as an agent would, the agent's own
``ServerClient.new_x509_svids``: ``--batches`` BatchNewX509SVID calls of ``--batch-size`` CSRs,
``--in-flight`` at a time, every agent starting at the same moment. Each agent holds one
connection; the proxy hands connections to the servers in turn, so the agents split evenly.

The floor is the same load through a proxy whose one backend is the first server (the second
idles); the figure is the SVIDs per second through a proxy in front of both, and their ratio.
Rounds interleave the two and the best of each is kept. Aim: ≥ 1.7x, which needs a core per
server plus room for the agents and the proxy; with fewer cores the servers, the agents, the
proxy and PostgreSQL share them. So the CPU each part used per 1,000 SVIDs is measured too
(from ``/proc``), and with it the best ratio the machine's cores allow is printed beside the
measured one: a server process signs on one core at most, and everything together on all.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
import structlog
from bench_batch_new_x509_svid import csr_for
from channels import attest_join_token, server_client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from processes import ServerProcess, ServerSettings, free_port, short_temp_dir
from pyspire_datastore_postgres.testing import find_server
from tcp_proxy import TcpProxy

from pyspire.agent.server_api import SvidRequest
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.transport.tls import spiffe_id_of
from pyspire_sdk.spiffeid import TrustDomain

TD = TrustDomain("example.org")
ATTESTATION_SPACING = 1.05
"""Seconds between attestations: the server admits one per second per client address, and
every connection through the proxy comes from 127.0.0.1."""


@dataclass(frozen=True)
class Agent:
    """An attested agent: its SVID chain, key and the entries it may mint SVIDs for."""

    chain: tuple[bytes, ...]
    key_pem: bytes
    entry_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """What one agent process needs: where to call, whom to trust, what to ask, and when."""

    port: int
    authorities: tuple[bytes, ...]
    agent: Agent
    batches: int
    in_flight: int
    start: Any
    """A barrier shared with the other agents and the benchmark: everyone goes at once."""


def run_agent(job: Job) -> tuple[float, float]:
    """In its own process: make the CSRs, wait for the common start, run the batches; the
    wall-clock times the batches started and the last one finished."""
    return asyncio.run(_agent(job))


async def _agent(job: Job) -> tuple[float, float]:
    key = serialization.load_pem_private_key(job.agent.key_pem, None)
    client = server_client(job.port, job.authorities)
    client.use_identity(job.agent.chain, key)  # type: ignore[arg-type]
    batches = [
        [
            SvidRequest(entry_id, csr_for(ec.generate_private_key(ec.SECP256R1())))
            for entry_id in job.agent.entry_ids
        ]
        for _ in range(job.batches + 1)
    ]
    await client.new_x509_svids(batches[0])  # the connection, the server's caches
    await asyncio.to_thread(job.start.wait)
    started = time.time()
    pending = iter(batches[1:])

    async def worker() -> None:
        for batch in pending:
            results = await client.new_x509_svids(batch)
            failed = [result for result in results if result.svid is None]
            if failed:
                raise RuntimeError(f"a batch failed: {failed[0].error}")

    await asyncio.gather(*(worker() for _ in range(job.in_flight)))
    finished = time.time()
    await client.close()
    return started, finished


def trust_anchors(server: ServerProcess) -> tuple[bytes, ...]:
    bundle = server.api(lambda client: client.bundle.get_bundle(bundle_pb.GetBundleRequest()))
    return tuple(authority.asn1 for authority in bundle.x509_authorities)


async def attest(port: int, authorities: tuple[bytes, ...], token: str, root: Path) -> Agent:
    """Attest through the proxy with ``token``, as the agent does; the agent's SVID and key."""
    chain, key = await attest_join_token(port, authorities, token, root)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Agent(chain=chain, key_pem=pem)


def register(server: ServerProcess, agent: Agent, count: int, number: int) -> Agent:
    """``count`` entries whose parent is ``agent``, created through ``server``."""
    agent_id = spiffe_id_of(agent.chain[0])
    parent = pb.Spiffeid(trust_domain=TD.name, path=agent_id.path)
    entries = [
        pb.Entry(
            spiffe_id=pb.Spiffeid(trust_domain=TD.name, path=f"/agent-{number}/w/{index}"),
            parent_id=parent,
            selectors=[pb.Selector(type="unix", value=f"uid:{index}")],
        )
        for index in range(count)
    ]
    request = entry_pb.BatchCreateEntryRequest(entries=entries)
    answer = server.api(lambda client: client.entry.batch_create_entry(request))
    ids = tuple(result.entry.id for result in answer.results if result.status.code == 0)
    if len(ids) != count:
        raise SystemExit(f"entries refused: {answer.results[0].status.message}")
    return Agent(agent.chain, agent.key_pem, ids)


@dataclass(frozen=True)
class Measured:
    """One run: SVIDs per second, and where the CPU went meanwhile."""

    rate: float
    server_cpu: float
    """Core-seconds the servers used per second of the run (2.0 is two busy cores)."""
    machine_busy: float
    """Fraction of all cores busy during the run (servers, agents, proxy, PostgreSQL)."""
    per_thousand: dict[str, float]
    """CPU milliseconds per 1,000 SVIDs of the servers, the agents and the proxy."""

    def split(self) -> str:
        return ", ".join(f"{name} {ms:,.0f}" for name, ms in self.per_thousand.items())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def issuance_rate(
    port: int,
    authorities: tuple[bytes, ...],
    agents: list[Agent],
    batches: int,
    in_flight: int,
    servers: list[ServerProcess],
) -> Measured:
    """SVIDs per second with every agent in its own process, all starting together once every
    one has made its CSRs and its first call."""
    context = multiprocessing.get_context("spawn")
    with (
        context.Manager() as manager,
        concurrent.futures.ProcessPoolExecutor(len(agents), mp_context=context) as pool,
    ):
        barrier = manager.Barrier(len(agents) + 1)
        jobs = [Job(port, authorities, agent, batches, in_flight, barrier) for agent in agents]
        running = [pool.submit(run_agent, job) for job in jobs]
        barrier.wait()
        workers = list(pool._processes)  # the agents' processes, alive until the pool ends
        before = _cpu_split(servers, workers)
        busy, total = _machine_ticks()
        windows = [future.result() for future in running]
        after = _cpu_split(servers, workers)
        busy_after, total_after = _machine_ticks()
    elapsed = max(end for _, end in windows) - min(start for start, _ in windows)
    count = sum(len(agent.entry_ids) for agent in agents) * batches
    used = {name: after[name] - before[name] for name in after}
    return Measured(
        rate=count / elapsed,
        server_cpu=used["servers"] / elapsed,
        machine_busy=(busy_after - busy) / max(1, total_after - total),
        per_thousand={name: seconds * 1e6 / count for name, seconds in used.items()},
    )


def ceiling(measured: Measured, cores: int) -> str:
    """The ratio this machine allows at best, from what one SVID costs: a server uses at most
    one core (one event loop), and servers, agents and proxy together at most ``cores``."""
    server = measured.per_thousand["servers"] / 1000
    everything = sum(measured.per_thousand.values()) / 1000
    one = min(1 / server, cores / everything)
    two = min(2 / server, cores / everything)
    return f"{two / one:.2f} ({one * 1000:,.0f} and {two * 1000:,.0f} SVIDs/s)"


def _cpu_split(servers: list[ServerProcess], agents: list[int]) -> dict[str, float]:
    """CPU seconds so far of the servers, the agents' processes and this process (the proxy;
    the agents wait on the barrier meanwhile, so this process does little else)."""
    return {
        "servers": sum(_cpu_seconds(server.pid) for server in servers),
        "agents": sum(_cpu_seconds(pid) for pid in agents),
        "proxy": time.process_time(),
    }


async def _schema(server: str, statement: str) -> None:
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    database = asyncio.run(find_server())
    schema = f"pyspire_bench_{secrets.token_hex(6)}"
    asyncio.run(_schema(database, f'CREATE SCHEMA "{schema}"'))
    root = short_temp_dir()
    table = (
        "[server.plugins.datastore.postgres]\n"
        f'connection_string = "{database}?search_path={schema}"\n'
    )
    servers: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            (root / name).mkdir()
            settings = ServerSettings(
                root=root / name, port=free_port(), datastore=table, log_level="WARN"
            )
            servers.append(ServerProcess(settings))
            servers[-1].start()
        ports = [server.settings.port for server in servers]
        authorities = trust_anchors(servers[0])
        agents = []
        with TcpProxy(ports) as proxy:
            for number in range(args.agents):
                token = servers[0].generate_token()
                agent = asyncio.run(attest(proxy.port, authorities, token, root))
                agents.append(register(servers[0], agent, args.batch_size, number))
                time.sleep(ATTESTATION_SPACING)
        best: dict[str, Measured] = {}
        for _ in range(args.rounds):
            for name, backends in (("one server", ports[:1]), ("two servers", ports)):
                with TcpProxy(backends) as proxy:
                    measured = issuance_rate(
                        proxy.port, authorities, agents, args.batches, args.in_flight, servers
                    )
                if name not in best or measured.rate > best[name].rate:
                    best[name] = measured
                print(
                    f"  {name}: {measured.rate:,.0f} SVIDs/s, servers busy "
                    f"{measured.server_cpu:.2f} cores, machine {measured.machine_busy:.0%} busy; "
                    f"CPU ms per 1,000 SVIDs: {measured.split()}"
                )
    except BaseException:
        for server in servers:
            print(server.log()[-5000:], file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)
        asyncio.run(_schema(database, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    one, two = best["one server"], best["two servers"]
    print(f"cores: {os.cpu_count()}; agents: {args.agents}, {args.in_flight} batches in flight")
    print(
        f"one server behind the proxy (floor): {one.rate:,.0f} SVIDs/s "
        f"(server {one.server_cpu:.2f} cores, machine {one.machine_busy:.0%} busy)"
    )
    print(
        f"two servers behind the proxy: {two.rate:,.0f} SVIDs/s "
        f"(servers {two.server_cpu:.2f} cores, machine {two.machine_busy:.0%} busy)"
    )
    print(f"CPU ms per 1,000 SVIDs with two servers: {two.split()}")
    print(f"ratio: {two.rate / one.rate:.2f} (aim >= 1.7)")
    cores = os.cpu_count() or 1
    print(f"best ratio the CPU split allows on {cores} cores: {ceiling(two, cores)}")


if __name__ == "__main__":
    main()
