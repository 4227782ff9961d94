"""The agent's CPU from start to its first SVIDs: attesting with a join token, then the first
sync until it holds an X509-SVID for each of its entries, against a floor.

    .venv/bin/python tests/bench/bench_agent_first_sync.py [--agents 50] [--rounds 6]
        [--entries 20]

A real ``pyspire-server`` (SQLite, ``log_level = "WARN"``) runs in its own process; join tokens
and ``--entries`` entries per agent are registered over its admin socket first. In this process,
each round assembles ``--agents`` agents from the agent's own parts, as the load generator does
(:class:`~pyspire.agent.node_identity.NodeIdentity` with the join-token attestor and the memory
key manager, :class:`~pyspire.agent.client.ServerClient`,
:class:`~pyspire.agent.cache.WorkloadCache`, :class:`~pyspire.agent.sync.SyncManager`), each
from its own loopback address, and starts them all at once: ``NodeIdentity.start`` then syncs
until every entry holds an SVID; they log at WARN, as the load generator's agents do. The
figure is this process's CPU time (all its threads, ``time.process_time``) over the round, per
agent. The server's CPU is not in it.

The agents of a round first all attest at once, then all sync at once, so that the two phases
are told apart: attesting (``NodeIdentity.start``) and the first sync, and both together.

The floor, measured in the same run before each agents' round, is the crypto an agent cannot
avoid on that path, per agent: for attesting, the client's side of an anonymous TLS handshake
over memory BIOs against an in-process server context and one P-256 key generation with one
ECDSA signature of a CSR's size; for the first sync, the client's side of a handshake
presenting an SVID and ``entries`` such keys and signatures. Printed: each figure's median per
agent over the rounds with the lowest and highest round, and the ratio of the medians to the
floor's. Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from loadgen.registration import register
from loadgen.source import SOURCE_ADDRESS, SourceBoundLoop, address_of
from processes import ProcessError, ServerProcess, ServerSettings, free_port, short_temp_dir
from pyspire_keymanager_memory import MemoryKeyManager
from pyspire_nodeattestor_join_token import AgentJoinTokenAttestor, AgentJoinTokenConfig

from pyspire.agent.bootstrap import BootstrapTrust
from pyspire.agent.cache import WorkloadCache
from pyspire.agent.client import ServerClient
from pyspire.agent.node_identity import NodeIdentity
from pyspire.agent.storage import AgentStateStore
from pyspire.agent.sync import SyncManager
from pyspire.telemetry.logging import configure_logging
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire.transport.tls import build_client_context, build_server_context
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.plugin import NoConfig
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import make_host_services

JOIN_TOKEN = "join_token"
KINDS = ("attest", "sync", "total")
FLOORS = ("floor attest", "floor sync", "floor total")
CSR_SIZE = 260
"""About the size of the CertificationRequestInfo a workload CSR signs."""


class Agent:
    """One agent, assembled as ``pyspire-agent`` assembles it (no Workload API)."""

    def __init__(
        self,
        index: int,
        token: str,
        bundle: Bundle,
        port: int,
        data: Path,
        metrics: PrometheusMetrics,
    ) -> None:
        self.index = index
        self.token = token
        self.bundle = bundle
        self.data = data / f"agent-{index}"
        self.clock = SystemClock()
        self.client = ServerClient(
            trust_domain=bundle.trust_domain, address="127.0.0.1", port=port, bundle=bundle
        )
        self.cache = WorkloadCache(self.client, self.clock)
        self.sync = SyncManager(self.client, self.cache, self.clock, metrics=metrics)
        self.identity: NodeIdentity | None = None

    async def build(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        host = make_host_services(self.data, clock=self.clock, plugin_name=JOIN_TOKEN)
        attestor = AgentJoinTokenAttestor()
        await attestor.configure(AgentJoinTokenConfig(token=self.token), host)
        keys = MemoryKeyManager()
        await keys.configure(NoConfig(), host)
        self.identity = NodeIdentity(
            client=self.client,
            attestor_name=JOIN_TOKEN,
            attestor=attestor,
            key_manager=keys,
            store=AgentStateStore(self.data, self.bundle.trust_domain),
            bootstrap=BootstrapTrust(self.bundle, "benchmark"),
            clock=self.clock,
        )

    async def attest(self) -> None:
        """``NodeIdentity.start`` with the join token."""
        assert self.identity is not None
        SOURCE_ADDRESS.set(address_of(self.index))
        await self.identity.start()

    async def first_svids(self, entries: int) -> None:
        """Sync until every entry holds an SVID."""
        SOURCE_ADDRESS.set(address_of(self.index))
        while True:
            report = await self.sync.sync_now()
            held = len(self.cache.snapshot().identities)
            if not report.failed and report.entries >= entries and held == report.entries:
                return
            await asyncio.sleep(0.2)


async def agent_round(
    agents: Sequence[Agent], entries: int, limit: float
) -> tuple[float, float, float]:
    """Per-agent CPU seconds of this process while all attest at once, then while all sync
    until they hold their SVIDs; and the round's wall seconds."""
    for agent in agents:
        await agent.build()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        async with asyncio.timeout(limit):
            await asyncio.gather(*(agent.attest() for agent in agents))
            attested = time.process_time()
            await asyncio.gather(*(agent.first_svids(entries) for agent in agents))
            synced = time.process_time()
    finally:
        took = time.perf_counter() - started
        for agent in agents:
            await agent.client.close()
    count = len(agents)
    return (attested - cpu) / count, (synced - attested) / count, took


# -- the floor ------------------------------------------------------------------------------


class FloorCredentials:
    """A CA, a server certificate and an agent certificate, as the real ones are shaped."""

    def __init__(self, trust_domain: str) -> None:
        now = datetime.now(UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bench")])
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(1)
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.server_key, self.server = self._leaf(f"spiffe://{trust_domain}/spire/server", 2)
        self.agent_key, self.agent = self._leaf(
            f"spiffe://{trust_domain}/spire/agent/join_token/bench", 3
        )

    def _leaf(
        self, spiffe_id: str, serial: int
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        now = datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=True,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        return key, certificate

    def der(self, certificate: x509.Certificate) -> bytes:
        return certificate.public_bytes(serialization.Encoding.DER)


def client_handshake_cpu(client: ssl.SSLContext, server: ssl.SSLContext) -> float:
    """Thread CPU seconds of the client's side of one handshake over memory BIOs."""
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    near = client.wrap_bio(client_in, client_out, server_side=False)
    far = server.wrap_bio(server_in, server_out, server_side=True)
    spent = 0.0
    near_done = far_done = False
    for _ in range(10):
        if not near_done:
            started = time.thread_time()
            try:
                near.do_handshake()
                near_done = True
            except ssl.SSLWantReadError:
                pass
            spent += time.thread_time() - started
        server_in.write(client_out.read())
        if not far_done:
            try:
                far.do_handshake()
                far_done = True
            except ssl.SSLWantReadError:
                pass
        client_in.write(server_out.read())
        if near_done and far_done:
            return spent
    raise ProcessError("the floor's handshake did not complete")


def floor_round(credentials: FloorCredentials, agents: int, entries: int) -> tuple[float, float]:
    """Per-agent CPU seconds of the unavoidable crypto (see the module documentation): for
    attesting (the anonymous handshake, one key and signature) and for the first sync (the
    handshake presenting the SVID, a key and a signature per entry)."""
    ca = [credentials.der(credentials.ca)]
    server = build_server_context([credentials.der(credentials.server)], credentials.server_key, ca)
    anonymous = build_client_context(ca)
    presenting = build_client_context(
        ca, [credentials.der(credentials.agent)], credentials.agent_key
    )
    message = bytes(CSR_SIZE)
    signature = ec.ECDSA(hashes.SHA256())

    def keys(count: int) -> float:
        started = time.process_time()
        for _ in range(count):
            ec.generate_private_key(ec.SECP256R1()).sign(message, signature)
        return time.process_time() - started

    attest = sync = 0.0
    for _ in range(agents):
        attest += client_handshake_cpu(anonymous, server) + keys(1)
        sync += client_handshake_cpu(presenting, server) + keys(entries)
    return attest / agents, sync / agents


# -- the run --------------------------------------------------------------------------------


async def measure(
    server: ServerProcess, bundle: Bundle, args: argparse.Namespace, data: Path
) -> dict[str, list[float]]:
    total = args.agents * args.rounds
    tokens = [f"first-sync-{index}" for index in range(total)]
    await register(
        server.socket_path, bundle.trust_domain.name, list(enumerate(tokens)), args.entries
    )
    credentials = FloorCredentials(bundle.trust_domain.name)
    metrics = PrometheusMetrics("pyspire_agent")  # one per process, as in the agent
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS + FLOORS}
    for number in range(args.rounds):
        floors = floor_round(credentials, args.agents, args.entries)
        indexes = range(number * args.agents, (number + 1) * args.agents)
        agents = [
            Agent(index, tokens[index], bundle, server.settings.port, data, metrics)
            for index in indexes
        ]
        attest, sync, took = await agent_round(agents, args.entries, args.timeout)
        figures = (attest, sync, attest + sync, *floors, sum(floors))
        for kind, figure in zip(KINDS + FLOORS, figures, strict=True):
            samples[kind].append(figure)
        print(
            f"round {number + 1}: agent {attest * 1000:5.2f} + {sync * 1000:5.2f} ms, floor "
            f"{floors[0] * 1000:4.2f} + {floors[1] * 1000:4.2f} ms per agent; {took:5.2f} s wall",
            flush=True,
        )
    return samples


def _line(label: str, values: Sequence[float], floor: float) -> str:
    median = statistics.median(values)
    return (
        f"  {label:<44} {median * 1000:7.2f} ms  (range {min(values) * 1000:.2f}-"
        f"{max(values) * 1000:.2f})  {median / floor:5.2f}x floor"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=50, help="agents started at once per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each kind, in turn")
    parser.add_argument("--entries", type=int, default=20, help="entries per agent")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per round")
    args = parser.parse_args(argv)
    configure_logging("WARN")  # as the load generator's agents log

    root = short_temp_dir()
    server = ServerProcess(ServerSettings(root=root, port=free_port(), log_level="WARN"))
    data = Path(tempfile.mkdtemp(prefix="pyspire-first-sync-"))
    try:
        server.start()
        pem = server.write_bundle(root / "bundle.pem").read_bytes()
        bundle = Bundle.from_pem(TrustDomain(server.settings.trust_domain), pem)
        with asyncio.Runner(loop_factory=SourceBoundLoop) as runner:
            samples = runner.run(measure(server, bundle, args, data))
    except (ProcessError, TimeoutError) as error:
        print(f"benchmark failed: {error!r}\nserver log:\n{server.log()[-4000:]}", file=sys.stderr)
        return 1
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)

    print(
        f"agent-side CPU per agent, start (join token) to holding {args.entries} SVIDs, "
        f"{args.agents} agents at once per round, {args.rounds} rounds with floors in turn"
    )
    labels = {
        "attest": "NodeIdentity.start (join token)",
        "sync": "first sync until all SVIDs are held",
        "total": "both",
    }
    for kind, floor_kind in zip(KINDS, FLOORS, strict=True):
        floor = statistics.median(samples[floor_kind])
        print(_line(f"floor: {labels[kind]}", samples[floor_kind], floor))
        print(_line(f"agent: {labels[kind]}", samples[kind], floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
