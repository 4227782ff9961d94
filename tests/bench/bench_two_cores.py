"""Burst issuance on two cores, both designs in one run: signing workers in one server process,
or two server processes on one datastore sharing their port through SO_REUSEPORT.

    .venv/bin/python tests/bench/bench_two_cores.py [--agents 1000] [--svids 20] [--clients 2]

Every server runs in a process of its own (spawned), built as ``bench_burst_issuance.py``
builds it (:class:`~bench_burst_issuance.BenchServer`: SQLite datastore, in-process key manager,
the TCP gate and every service, over real TLS), and the agents are played by the same client
processes (``--agents`` attested and connected agents, each sending one BatchNewX509SVID with
``--svids`` CSRs at once; SVIDs per second until the last reply). Three deployments:

* **one process**: one server, ``signing_processes = 0``;
* **workers**: one server, ``signing_processes = 2``;
* **reuse_port**: two servers, ``signing_processes = 0`` each, on one SQLite file (WAL) and one
  port with ``SO_REUSEPORT``, each with a CA of its own; the kernel hands each agent's
  connection to one of them. The first prepares the agents and their entries, the second reads
  them from the shared file before the clock starts.

The floors are measured in the same run: raw ``cryptography`` leaf signing in 1 process and in 2
processes at once, and its CPU per leaf. The server CPU is read from ``/proc`` for every server
process and its workers. Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
from bench_burst_issuance import (
    Agent,
    BenchServer,
    Outcome,
    _prepared_burst,
    _process_cpu,
    _scenario,
    floor_cpu_per_leaf,
    floor_rate,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.ca.manager import journal_name


@dataclass(frozen=True)
class ServerSpec:
    """One server process of a deployment."""

    processes: int
    folder: Path
    database: Path
    port: int
    reuse_port: bool
    name: str


def serve(spec: ServerSpec, pipe: multiprocessing.connection.Connection) -> None:
    """A server process: start, tell the parent its port, CAs and workers, then obey."""
    asyncio.run(_serve(spec, pipe))


async def _serve(spec: ServerSpec, pipe: multiprocessing.connection.Connection) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    async with BenchServer(
        spec.processes,
        spec.folder,
        database=spec.database,
        port=spec.port,
        reuse_port=spec.reuse_port,
        journal=journal_name(spec.name),
    ) as server:
        pipe.send((server.port, server.authorities, tuple(server.worker_pids)))
        while True:
            command, argument = await asyncio.to_thread(pipe.recv)
            if command == "stop":
                break
            if command == "prepare":
                count, svids, key_pem = argument
                key = serialization.load_pem_private_key(key_pem, None)
                pipe.send(await _prepared_burst(server, count, svids, key))  # type: ignore[arg-type]
            elif command == "refresh":
                await server.registry.refresh()
                pipe.send(None)


class ServerChild:
    """A server process this benchmark started, and the pipe it obeys."""

    def __init__(self, spec: ServerSpec) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(target=serve, args=(spec, theirs))
        self.process.start()
        if not self.pipe.poll(120):
            raise RuntimeError(f"server {spec.name} did not start")
        self.port, self.authorities, self.worker_pids = self.pipe.recv()

    def ask(self, command: str, argument: object = None) -> object:
        self.pipe.send((command, argument))
        return self.pipe.recv()

    def cpu(self) -> tuple[float, float]:
        assert self.process.pid is not None
        workers = sum(_process_cpu(pid) for pid in self.worker_pids)
        return _process_cpu(self.process.pid) + workers, workers

    def stop(self) -> None:
        self.pipe.send(("stop", None))
        self.process.join(60)


class Deployment:
    """Server processes on one datastore and one port: what the agents are played against."""

    def __init__(self, children: list[ServerChild]) -> None:
        self.children = children
        self.readings: list[list[float]] = []
        """Each server process's CPU seconds at every :meth:`cpu` call."""

    @property
    def port(self) -> int:
        return self.children[0].port

    @property
    def authorities(self) -> tuple[bytes, ...]:
        """The last started knows every CA: each was in the shared bundle before it."""
        return self.children[-1].authorities

    def cpu(self) -> tuple[float, float]:
        used = [child.cpu() for child in self.children]
        self.readings.append([total for total, _ in used])
        return sum(total for total, _ in used), sum(workers for _, workers in used)


def deploy(folder: Path, processes: int, servers: int) -> Deployment:
    """``servers`` server processes with ``processes`` workers each, on one SQLite file and
    (with more than one) one port shared through SO_REUSEPORT."""
    database = folder / "datastore.sqlite3"
    children: list[ServerChild] = []
    port = 0
    for index in range(servers):
        own = folder / f"server-{index}"
        own.mkdir()
        spec = ServerSpec(processes, own, database, port, servers > 1, f"server-{index}")
        children.append(ServerChild(spec))
        port = children[0].port
    return Deployment(children)


async def _burst(deployment: Deployment, args: argparse.Namespace) -> Outcome:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    first = deployment.children[0]
    prepared = await asyncio.to_thread(first.ask, "prepare", (args.agents, args.svids, key_pem))
    agents: list[Agent] = prepared  # type: ignore[assignment]
    for other in deployment.children[1:]:
        await asyncio.to_thread(other.ask, "refresh")
    return await _scenario(deployment, agents, key_pem, args.svids, args.clients, False)


def measure(processes: int, servers: int, args: argparse.Namespace) -> tuple[Outcome, list[float]]:
    """The burst against one deployment; its outcome and each server process's CPU seconds."""
    with tempfile.TemporaryDirectory() as folder:
        deployment = deploy(Path(folder), processes, servers)
        try:
            outcome = asyncio.run(_burst(deployment, args))
        finally:
            for child in deployment.children:
                child.stop()
    before, after = deployment.readings[-2:]  # read as the burst began and ended
    return outcome, [end - start for start, end in zip(before, after, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--svids", type=int, default=20, help="SVIDs per agent")
    parser.add_argument("--clients", type=int, default=2, help="processes playing the agents")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    floors = {1: floor_rate(1, 2000), 2: floor_rate(2, 2000)}
    floor_cpu = floor_cpu_per_leaf(2000)
    print(f"raw cryptography leaf signing, 1 process: {floors[1]:,.0f} SVIDs/s (floor)")
    print(f"raw cryptography leaf signing, 2 processes: {floors[2]:,.0f} SVIDs/s (floor)")
    print(f"raw cryptography leaf signing CPU: {floor_cpu * 1e6:.0f} us per leaf (floor)")
    svids = args.agents * args.svids
    rates: dict[str, float] = {}
    for label, processes, servers in (
        ("one process", 0, 1),
        ("one process, signing_processes = 2", 2, 1),
        ("two processes, reuse_port", 0, 2),
    ):
        outcome, per_server = measure(processes, servers, args)
        rate = rates[label] = svids / outcome.elapsed
        share = " / ".join(f"{cpu / outcome.cpu:.0%}" for cpu in per_server)
        print(
            f"{label}: {rate:,.0f} SVIDs/s; {rate / floors[1]:.2f}x the 1-process floor, "
            f"{rate / floors[2]:.2f}x the 2-process floor, "
            f"{rate / rates['one process']:.2f}x one process; server CPU "
            f"{outcome.cpu / svids * 1e6:,.0f} us per SVID "
            f"({outcome.worker_cpu / svids * 1e6:,.0f} in workers; "
            f"{outcome.cpu / svids / floor_cpu:.2f}x the floor's {floor_cpu * 1e6:.0f} us); "
            f"CPU per server process: {share}"
        )


if __name__ == "__main__":
    main()
