"""Bursts from a fleet: 1,000 agents asking for 20 SVIDs each at once, and 1,000 agents attesting
with join tokens at once until each holds its first SVIDs; with and without signing workers.

    .venv/bin/python tests/bench/bench_burst_issuance.py [--agents 1000] [--svids 20]
        [--processes 0 2] [--clients 2]

For each ``--processes`` value (the server's ``signing_processes``) a fresh server runs in this
process: SQLite datastore, in-process key manager, the join_token node attestor, the TCP gate
and every service, over real TLS through the server's own listener (``serve_tcp``). The agents
are played by ``--clients`` processes (an agent is a process of its own in production; here
each client process plays its share of agents, each with its own connection):

* **burst**: every agent is attested and connected (its mTLS handshake done) before the clock
  starts; then each sends one BatchNewX509SVID with ``--svids`` CSRs for its own entries. The
  figure is SVIDs per second until the last reply.
* **attestation**: every agent holds a join token and connects from a loopback address of its
  own (the server admits one attestation per second per address); at once, each attests over a
  fresh TLS connection, then, over mTLS with the agent SVID it got, fetches its authorized
  entries and asks for their ``--svids`` SVIDs. The figure is when the last agent held them
  (target: within 10 s for 1,000 agents) and the median.

The floors are measured in the same run: ``cryptography`` building and signing the same kind of
leaf with an in-process key (``raw_signing_rate``), in 1 process and in 2 processes at once.
Burst ratios are to the floor with as many processes as the server signs in (1 without workers;
with workers, the 2-process floor on a 2-core machine); the attestation ratio is the time the
floor needs to sign every certificate of the run (agent SVIDs and workload SVIDs) over the time
measured. Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import betterproto
import grpclib.const
import grpclib.exceptions
import grpclib.server
import structlog
from bench_batch_new_x509_svid import csr_for, raw_signing_rate
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire_datastore_sqlite import SqliteDataStore, SqliteDataStoreConfig
from pyspire_nodeattestor_join_token import ServerJoinTokenAttestor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from channels import SourceBoundChannel, anonymous_context

from pyspire.agent.client import ServerClient
from pyspire.agent.node_identity import START_RETRY_INITIAL, START_RETRY_JITTER, START_RETRY_MAX
from pyspire.agent.server_api import SvidRequest
from pyspire.ca.manager import JOURNAL_NAME, CaManager, CaSettings
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.registry.cache import RegistryCache
from pyspire.server.api.gate import serial_hex
from pyspire.server.context import ServerContext
from pyspire.server.endpoints import ServerServices, tcp_servables
from pyspire.server.identity import ServerIdentity
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire.server.join_tokens import DataStoreJoinTokens
from pyspire.server.runtime import SERVER_API_LIMITS, signing_pool
from pyspire.transport.calls import InFlight
from pyspire.transport.listener import serve_tcp
from pyspire.transport.tls import RotatingServerContext
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.model import AttestedNode, JoinToken, RegistrationEntry
from pyspire_sdk.plugin import NoConfig
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.host import make_host_services

TD = TrustDomain("example.org")
ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"
WARM_UP_CONCURRENCY = 50
ATTEST_TIMEOUT = 900.0
"""Long enough that no attestation times out on a busy machine: a retried attestation would
find its join token used and end the run."""
ATTEST_ATTEMPTS = 10
_BUSY = frozenset({grpclib.const.Status.UNAVAILABLE, grpclib.const.Status.RESOURCE_EXHAUSTED})
"""Statuses an agent's start-up attestation retries after (the server could not take it now)."""
BENCH_LIMITS = dataclasses.replace(
    SERVER_API_LIMITS, first_request_timeout=ATTEST_TIMEOUT, max_unverified_per_address=100_000
)
"""The server's own connection limits but two: a connection may wait for its first request as
long as a call may take (the burst's agents connect, then wait for the go; a thousand handshakes
take longer than the 10 s an agent in production has to send its first call), and the bench's
agents may open any number of connections without a client certificate from one address
(production agents each have their own)."""
DISTINCT_CSRS = 400
"""CSRs each client process makes and reuses across its agents: the server checks every one it
receives all the same, and the client processes need not spend the run making keys."""


def floor_rate(processes: int, count: int) -> float:
    """Leaves per second ``cryptography`` alone signs in ``processes`` processes at once."""
    if processes == 1:
        return raw_signing_rate(count)
    with concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        list(pool.map(raw_signing_rate, [50] * processes))  # start and warm the processes
        began = time.perf_counter()
        list(pool.map(raw_signing_rate, [count] * processes))
        return processes * count / (time.perf_counter() - began)


@dataclass(frozen=True)
class Agent:
    """One simulated agent: its ID, join token (attestation) or SVID chain (burst), its entries
    and its loopback source address."""

    spiffe_id: str
    token: str
    chain: tuple[bytes, ...]
    entry_ids: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class ClientJob:
    port: int
    authorities: tuple[bytes, ...]
    agent_key_pem: bytes
    agents: tuple[Agent, ...]
    svids: int
    attest: bool


def _source(index: int) -> str:
    return f"127.1.{index // 250}.{index % 250 + 1}"


class BenchServer:
    """The server under test, in this process, with ``processes`` signing workers.

    By default it keeps its SQLite file in ``folder`` and listens on a free port; several can
    share one ``database`` and one ``port`` with ``reuse_port`` (SO_REUSEPORT), each with a CA
    ``journal`` of its own, as several server processes on one datastore do.
    """

    def __init__(
        self,
        processes: int,
        folder: Path,
        *,
        database: Path | None = None,
        port: int = 0,
        reuse_port: bool = False,
        journal: str = JOURNAL_NAME,
    ) -> None:
        self.processes = processes
        self.folder = folder
        self.database = database
        self.requested_port = port
        self.reuse_port = reuse_port
        self.journal = journal

    async def __aenter__(self) -> BenchServer:
        clock = SystemClock()
        host = make_host_services(self.folder, clock=clock)
        self._pool_context = signing_pool(self.processes)
        pool = await self._pool_context.__aenter__()
        self.worker_pids = pool.worker_pids if pool is not None else frozenset()
        self.datastore = SqliteDataStore()
        await self.datastore.configure(SqliteDataStoreConfig(database_path=self.database), host)
        self.keys = InProcessKeyManager()
        await self.keys.configure(NoConfig(), host)
        ca = CaManager(
            CaSettings(trust_domain=TD),
            key_manager=self.keys,
            store=self.datastore,
            clock=clock,
            journal=self.journal,
        )
        await ca.start()
        attestor = ServerJoinTokenAttestor()
        await attestor.configure(
            NoConfig(), dataclasses.replace(host, join_tokens=DataStoreJoinTokens(self.datastore))
        )
        self.registry = RegistryCache(self.datastore, TD, clock)
        self.issuer = SvidIssuer(ca=ca, clock=clock, policy=IssuancePolicy(), pool=pool)
        await self.registry.start()
        # As the server runs it: change events applied every second, or at once when poked.
        self._refresh = asyncio.create_task(self.registry.run(clock, timedelta(seconds=1)))
        context = ServerContext(
            trust_domain=TD,
            clock=clock,
            datastore=self.datastore,
            ca=ca,
            registry=self.registry,
            issuer=self.issuer,
            node_attestors={"join_token": attestor},
            started_at=clock.now(),
        )
        tls = RotatingServerContext()

        async def bundle() -> Bundle | None:
            return await self.datastore.get_bundle(TD)

        identity = ServerIdentity(
            trust_domain=TD, ca=ca, bundle=bundle, clock=clock, tls=tls, ttl=timedelta(hours=1)
        )
        await identity.rotate()
        self.server = grpclib.server.Server(
            tcp_servables(
                ServerServices.build(context), context, InFlight(), limits=SERVER_API_LIMITS
            )
        )
        # The production listener (write coalescing, lean HTTP/2 connections, the handshake
        # limit and connection limits), not grpclib's own ``Server.start``.
        self.listener = await serve_tcp(
            self.server,
            "127.0.0.1",
            self.requested_port,
            tls=tls.listening,
            limits=BENCH_LIMITS,
            name="server api",
            reuse_port=self.reuse_port,
        )
        self.port: int = self.listener.sockets[0].getsockname()[1]
        stored = await self.datastore.get_bundle(TD)
        assert stored is not None
        self.authorities: tuple[bytes, ...] = tuple(
            authority.der for authority in stored.x509_authorities
        )
        return self

    def cpu(self) -> tuple[float, float]:
        """CPU seconds this process and the workers used so far, and the workers' alone."""
        return server_cpu(self), workers_cpu(self)

    async def __aexit__(self, *exc: object) -> None:
        self._refresh.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._refresh
        self.server.close()
        await self.server.wait_closed()
        await self.keys.close()
        await self.datastore.close()
        await self._pool_context.__aexit__(None, None, None)

    async def entries_for(self, agent_ids: Sequence[SpiffeId], svids: int) -> list[list[str]]:
        """``svids`` entries parented to each agent; their IDs, per agent."""
        made = []
        for agent_id in agent_ids:
            made.append(
                await self.datastore.create_entries(
                    [
                        RegistrationEntry(
                            spiffe_id=SpiffeId.parse(f"{agent_id}/w/{index}"),
                            parent_id=agent_id,
                            selectors=(Selector("unix", f"uid:{index}"),),
                        )
                        for index in range(svids)
                    ]
                )
            )
        await self.registry.refresh()
        return [[entry.id for entry in entries] for entries in made]


async def _prepared_burst(
    server: BenchServer, count: int, svids: int, key: ec.EllipticCurvePrivateKey
) -> list[Agent]:
    ids = [SpiffeId.parse(f"spiffe://example.org/spire/agent/bench/{n}") for n in range(count)]
    entry_ids = await server.entries_for(ids, svids)
    agents = []
    for index, agent_id in enumerate(ids):
        svid = await server.issuer.agent_x509(agent_id, key.public_key())
        leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
        await server.datastore.create_attested_node(
            AttestedNode(
                spiffe_id=agent_id,
                attestation_type="bench",
                x509_svid_serial_number=serial_hex(leaf),
                x509_svid_expires_at=svid.expires_at,
            )
        )
        agents.append(
            Agent(str(agent_id), "", svid.cert_chain, tuple(entry_ids[index]), _source(index))
        )
    await server.registry.refresh()
    return agents


async def _prepared_attestation(server: BenchServer, count: int, svids: int) -> list[Agent]:
    tokens = [f"bench-token-{n}" for n in range(count)]
    ids = [SpiffeId.parse(f"spiffe://example.org/spire/agent/join_token/{t}") for t in tokens]
    entry_ids = await server.entries_for(ids, svids)
    expires = SystemClock().now() + timedelta(hours=1)
    for token in tokens:
        await server.datastore.create_join_token(JoinToken(token=token, expires_at=expires))
    return [
        Agent(str(agent_id), token, (), tuple(entry_ids[index]), _source(index))
        for index, (agent_id, token) in enumerate(zip(ids, tokens, strict=True))
    ]


def run_client(job: ClientJob, ready: object, go: object, results: object) -> None:
    """A client process: prepare every agent it plays, say so, wait for go, run, report."""
    try:
        outcome: list[float] | str = asyncio.run(_client(job, ready, go))
    except Exception as error:  # reported to the parent, which stops the run with it
        outcome = f"{type(error).__name__}: {error}"
    results.put(outcome)  # type: ignore[attr-defined]


async def _client(job: ClientJob, ready: object, go: object) -> list[float]:
    key = serialization.load_pem_private_key(job.agent_key_pem, None)
    bundle = Bundle(TD, tuple(X509Authority(der) for der in job.authorities))
    csrs = [csr_for(ec.generate_private_key(ec.SECP256R1())) for _ in range(DISTINCT_CSRS)]
    agent_csr = csr_for(key)  # type: ignore[arg-type]
    clients = [
        ServerClient(
            trust_domain=TD,
            address="127.0.0.1",
            port=job.port,
            bundle=bundle,
            timeout=ATTEST_TIMEOUT,
        )
        for _ in job.agents
    ]
    if not job.attest:
        for client, agent in zip(clients, job.agents, strict=True):
            client.use_identity(agent.chain, key)  # type: ignore[arg-type]
        # Connected and handshaken before the clock starts, a few at a time: the burst
        # measures issuance.
        warming = asyncio.Semaphore(WARM_UP_CONCURRENCY)

        async def warm(client: ServerClient) -> None:
            async with warming:
                await client.fetch_authorized_entries()

        await asyncio.gather(*(warm(client) for client in clients))
    ready.put(len(clients))  # type: ignore[attr-defined]
    await asyncio.to_thread(go.wait)  # type: ignore[attr-defined]
    began = time.perf_counter()

    async def one(index: int, client: ServerClient, agent: Agent) -> float:
        if job.attest:
            chain = await _attest_until_admitted(job.port, agent, agent_csr)
            client.use_identity(chain, key)  # type: ignore[arg-type]
            await client.fetch_authorized_entries()
        requests = [
            SvidRequest(entry_id, csrs[(index * job.svids + n) % len(csrs)])
            for n, entry_id in enumerate(agent.entry_ids)
        ]
        results = await client.new_x509_svids(requests)
        failed = [result for result in results if result.svid is None]
        if failed:
            raise RuntimeError(f"an SVID was refused: {failed[0].error}")
        return time.perf_counter() - began

    timings = await asyncio.gather(
        *(
            one(index, client, agent)
            for index, (client, agent) in enumerate(zip(clients, job.agents, strict=True))
        )
    )
    await asyncio.gather(*(client.close() for client in clients))
    return list(timings)


async def _attest_until_admitted(port: int, agent: Agent, csr: bytes) -> tuple[bytes, ...]:
    """:func:`_attest` again after a connection the server dropped (a handshake it could not
    finish within its handshake timeout), as an agent retries: after a jittered second; and
    after UNAVAILABLE (the server's attestation queue was full) or RESOURCE_EXHAUSTED (the
    address's rate limit), by the agent's start-up backoff."""
    busy = Backoff(BackoffPolicy(START_RETRY_INITIAL, START_RETRY_MAX, jitter=START_RETRY_JITTER))
    attempts = 0
    while True:
        try:
            return await _attest(port, agent, csr)
        except grpclib.exceptions.GRPCError as error:
            if error.status not in _BUSY:
                raise
            await asyncio.sleep(busy.failed())
        except (TimeoutError, OSError, grpclib.exceptions.StreamTerminatedError):
            attempts += 1
            if attempts == ATTEST_ATTEMPTS:
                raise
            await asyncio.sleep(0.5 + secrets.randbelow(1000) / 1000)


async def _attest(port: int, agent: Agent, csr: bytes) -> tuple[bytes, ...]:
    """AttestAgent with the agent's join token over a fresh TLS connection of its own; the agent
    SVID's chain. Every agent of a client process sends the CSR of the one agent key the
    process holds; the server checks each all the same."""
    channel = SourceBoundChannel(agent.source, "127.0.0.1", port, anonymous_context())
    try:
        async with channel.request(
            ATTEST_AGENT,
            grpclib.const.Cardinality.STREAM_STREAM,
            agent_pb.AttestAgentRequest,
            agent_pb.AttestAgentResponse,
            timeout=ATTEST_TIMEOUT,
        ) as stream:
            await stream.send_message(
                agent_pb.AttestAgentRequest(
                    params=agent_pb.AttestAgentRequestParams(
                        data=pb.AttestationData(type="join_token", payload=agent.token.encode()),
                        params=agent_pb.AgentX509SvidParams(csr=csr),
                    )
                )
            )
            response = await stream.recv_message()
            await stream.end()
            await stream.recv_trailing_metadata()
    finally:
        channel.close()
    if response is None or betterproto.which_one_of(response, "step")[0] != "result":
        raise RuntimeError("attestation ended without a result")
    return tuple(response.result.svid.cert_chain)


@dataclass(frozen=True)
class Outcome:
    """One scenario's wall time, every agent's time, and the CPU seconds the server spent (its
    process and its signing workers)."""

    elapsed: float
    timings: list[float]
    cpu: float
    worker_cpu: float


def _process_cpu(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far (from ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cpu(server: BenchServer) -> float:
    """CPU seconds the server's signing workers used so far."""
    return sum(_process_cpu(pid) for pid in server.worker_pids)


def server_cpu(server: BenchServer) -> float:
    """CPU seconds the server process and its workers used so far. The client processes are
    not in it: they are not this process's threads, and not the server's workers."""
    return time.process_time() + workers_cpu(server)


def floor_cpu_per_leaf(count: int) -> float:
    """CPU seconds per leaf ``cryptography`` alone spends signing the same template."""
    began = time.process_time()
    raw_signing_rate(count)
    return (time.process_time() - began) / count


class Target(Protocol):
    """What the agents are played against: where it listens, the CAs that sign its TLS
    certificates, and the CPU seconds it used so far (all, and in signing workers)."""

    @property
    def port(self) -> int: ...

    @property
    def authorities(self) -> tuple[bytes, ...]: ...

    def cpu(self) -> tuple[float, float]: ...


async def _scenario(
    server: Target, agents: list[Agent], key_pem: bytes, svids: int, clients: int, attest: bool
) -> Outcome:
    """Play ``agents`` in ``clients`` processes: the wall time from go until the last agent was
    done, each agent's time, and the server's CPU."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    share = (len(agents) + clients - 1) // clients
    processes = [
        context.Process(
            target=run_client,
            args=(
                ClientJob(
                    port=server.port,
                    authorities=server.authorities,
                    agent_key_pem=key_pem,
                    agents=tuple(agents[n * share : (n + 1) * share]),
                    svids=svids,
                    attest=attest,
                ),
                ready,
                go,
                results,
            ),
        )
        for n in range(clients)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        await asyncio.to_thread(ready.get, True, 600)
    cpu_before, workers_before = server.cpu()
    began = time.perf_counter()
    go.set()
    timings: list[float] = []
    for _ in processes:
        outcome = await asyncio.to_thread(results.get, True, 600)
        if isinstance(outcome, str):
            raise RuntimeError(f"a client process failed: {outcome}")
        timings.extend(outcome)
    elapsed = time.perf_counter() - began
    cpu_after, workers_after = server.cpu()
    cpu = cpu_after - cpu_before
    worker_cpu = workers_after - workers_before
    for process in processes:
        await asyncio.to_thread(process.join)
    return Outcome(elapsed, timings, cpu, worker_cpu)


async def measure(processes: int, count: int, svids: int, clients: int) -> tuple[Outcome, Outcome]:
    """The burst and the attestation run against a server with ``processes`` signing
    workers."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with tempfile.TemporaryDirectory() as folder:
        async with BenchServer(processes, Path(folder)) as server:
            burst_agents = await _prepared_burst(server, count, svids, key)
            burst = await _scenario(server, burst_agents, key_pem, svids, clients, False)
            attesting = await _prepared_attestation(server, count, svids)
            attestation = await _scenario(server, attesting, key_pem, svids, clients, True)
    return burst, attestation


def report(
    processes: int, args: argparse.Namespace, floors: dict[int, float], floor_cpu: float
) -> None:
    """Run both scenarios against a server with ``processes`` workers and print them."""
    burst, attestation = asyncio.run(measure(processes, args.agents, args.svids, args.clients))
    cores = 1 if processes == 0 else 2
    floor = floors[cores]
    svids = args.agents * args.svids
    rate = svids / burst.elapsed
    print(f"signing_processes = {processes}:")
    print(
        f"  burst, {args.agents} agents x {args.svids} SVIDs: {rate:,.0f} SVIDs/s; ratio to the "
        f"{cores}-process floor {rate / floor:.2f}, to the 1-process floor "
        f"{rate / floors[1]:.2f} (target >= 0.8); server CPU {burst.cpu / svids * 1e6:,.0f} "
        f"us per SVID ({burst.worker_cpu / svids * 1e6:,.0f} in workers), "
        f"{burst.cpu / svids / floor_cpu:.2f}x the floor's {floor_cpu * 1e6:.0f} us"
    )
    certificates = args.agents * (args.svids + 1)
    last = max(attestation.timings)
    print(
        f"  attestation, {args.agents} join-token agents at once until each holds its "
        f"{args.svids} SVIDs: last {last:.1f} s (target <= 10 s), median "
        f"{statistics.median(attestation.timings):.1f} s; the {cores}-process floor signs the "
        f"{certificates:,} certificates in {certificates / floor:.1f} s, ratio "
        f"{certificates / floor / last:.2f}; server CPU "
        f"{attestation.cpu / args.agents * 1e3:.1f} ms per agent (attestation and its SVIDs; "
        f"{attestation.worker_cpu / args.agents * 1e3:.1f} in workers)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--svids", type=int, default=20, help="SVIDs per agent")
    parser.add_argument("--processes", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--clients", type=int, default=2, help="processes playing the agents")
    args = parser.parse_args()
    floors = {1: floor_rate(1, 2000), 2: floor_rate(2, 2000)}
    floor_cpu = floor_cpu_per_leaf(2000)
    print(f"raw cryptography leaf signing, 1 process: {floors[1]:,.0f} SVIDs/s (floor)")
    print(f"raw cryptography leaf signing, 2 processes: {floors[2]:,.0f} SVIDs/s (floor)")
    print(f"raw cryptography leaf signing CPU: {floor_cpu * 1e6:.0f} us per leaf (floor)")
    for processes in args.processes:
        report(processes, args, floors, floor_cpu)


if __name__ == "__main__":
    main()
