"""A real in-process server (TOML document, installed plugins, TCP with mTLS, admin socket) and
the agent-side parts a node identity is built from: a disk key manager, the join_token agent
attestor, the state store, and a fake clock that starts at the real time (the server's own TLS
validity follows the system clock; the fake clock only drives the agent's decisions)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from pyspire_keymanager_disk import DiskKeyManager
from pyspire_keymanager_disk.config import DiskKeyManagerConfig
from pyspire_nodeattestor_join_token import AgentJoinTokenAttestor, AgentJoinTokenConfig

from pyspire.agent.bootstrap import BootstrapTrust
from pyspire.agent.client import ServerClient
from pyspire.agent.node_identity import NodeIdentity
from pyspire.agent.storage import AgentStateStore
from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.proto.convert import bundle_from_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.server.api.admission import AttestationAdmission
from pyspire.server.api.agent import AgentService
from pyspire.server.api.entry import EntryService
from pyspire.server.api.ratelimit import ResourceExhaustedError
from pyspire.server.context import ServerContext
from pyspire.server.endpoints import ServerServices
from pyspire.server.runtime import ServerRuntime
from pyspire.telemetry.metrics import rpc_metric_name
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import (
    AgentNodeAttestor,
    Challenger,
    ServerNodeAttestor,
    agent_id,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock, make_host_services

TD = TrustDomain("example.org")
_build_services = ServerServices.build


def server_document(directory: Path) -> dict[str, object]:
    return {
        "server": {
            "trust_domain": TD.name,
            "data_dir": str(directory / "data"),
            "bind_address": "127.0.0.1",
            "bind_port": 0,
            "socket_path": str(directory / "admin" / "api.sock"),
            "plugins": {
                "datastore": {"sqlite": {}},
                "key_manager": {"disk": {}},
                "node_attestor": {"join_token": {}},
            },
        }
    }


class RunningServer:
    """A started :class:`ServerRuntime` and admin calls over its unix socket.

    The services are SPIRE's, with two test settings: no attestation rate limit (tests attest
    several agents within a second) and a SyncAuthorizedEntries page size of
    ``sync_page_size``. Without ``offer_bundles``, SyncAuthorizedEntries sends no bundles digest
    (as SPIRE's server and older pyspire servers).
    """

    def __init__(
        self,
        directory: Path,
        discovery: Discovery,
        sync_page_size: int = 500,
        entry_service: type[EntryService] = EntryService,
        node_attestors: Mapping[str, ServerNodeAttestor] | None = None,
        *,
        offer_bundles: bool = True,
    ) -> None:
        self.directory = directory
        self.offer_bundles = offer_bundles
        self.discovery = discovery
        self.sync_page_size = sync_page_size
        self.entry_service = entry_service
        self.node_attestors = dict(node_attestors or {})
        self.runtime: ServerRuntime | None = None
        self.task: asyncio.Task[None] | None = None

    def _services(
        self, context: ServerContext, *, admission: AttestationAdmission | None = None
    ) -> ServerServices:
        built = _build_services(context, admission=admission)
        return dataclasses.replace(
            built,
            agent=AgentService(
                dataclasses.replace(
                    context, node_attestors={**context.node_attestors, **self.node_attestors}
                ),
                attestation_rate_limit=False,
                admission=admission,
            ),
            entry=self.entry_service(
                context,
                sync_page_size=self.sync_page_size,
                bundles=built.bundle.answers if self.offer_bundles else None,
            ),
        )

    async def start(self) -> None:
        loaded = load_document(SERVER_SCHEMA, server_document(self.directory))
        runtime = ServerRuntime(loaded, self.discovery)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ServerServices, "build", self._services)
            task = asyncio.create_task(runtime.run())
            ready = asyncio.create_task(runtime.ready.wait())
            done, _ = await asyncio.wait(
                {task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED
            )
        if task in done:
            task.result()
        assert ready in done, "the server did not become ready"
        self.runtime, self.task = runtime, task

    async def stop(self) -> None:
        if self.runtime is not None and self.task is not None and not self.task.done():
            self.runtime.stop()
            await asyncio.wait_for(self.task, timeout=30)
        self.runtime = self.task = None

    @property
    def port(self) -> int:
        assert self.runtime is not None and self.runtime.listening is not None
        return self.runtime.listening.port

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[Channel]:
        assert self.runtime is not None and self.runtime.listening is not None
        channel = Channel(path=str(self.runtime.listening.socket_path))
        try:
            yield channel
        finally:
            channel.close()

    async def bundle(self) -> Bundle:
        async with self.admin() as channel:
            message = await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
        return bundle_from_proto(message)

    def calls(self, method: str) -> int:
        """How many calls of ``method`` (its gRPC path) the server answered so far."""
        assert self.runtime is not None
        name = "pyspire_server_" + rpc_metric_name(method).replace(".", "_") + "_total"
        return int(
            sum(
                sample.value
                for family in self.runtime.metrics.registry.collect()
                for sample in family.samples
                if sample.name == name
            )
        )

    async def join_token(self) -> str:
        value = f"tok-{uuid.uuid4().hex}"
        async with self.admin() as channel:
            await agent_pb.AgentStub(channel).create_join_token(
                agent_pb.CreateJoinTokenRequest(ttl=600, token=value)
            )
        return value

    async def create_entries(self, *entries: pb.Entry) -> list[pb.Entry]:
        async with self.admin() as channel:
            reply = await entry_pb.EntryStub(channel).batch_create_entry(
                entry_pb.BatchCreateEntryRequest(entries=list(entries))
            )
        for result in reply.results:
            assert result.status.code == 0, result.status.message
        return [result.entry for result in reply.results]

    async def update_entry(self, entry: pb.Entry) -> pb.Entry:
        async with self.admin() as channel:
            reply = await entry_pb.EntryStub(channel).batch_update_entry(
                entry_pb.BatchUpdateEntryRequest(entries=[entry])
            )
        assert reply.results[0].status.code == 0, reply.results[0].status.message
        return reply.results[0].entry

    async def ban(self, agent_id: SpiffeId) -> None:
        async with self.admin() as channel:
            await agent_pb.AgentStub(channel).ban_agent(
                agent_pb.BanAgentRequest(id=wire_id(agent_id))
            )

    async def agent(self, agent_id: SpiffeId) -> pb.Agent:
        async with self.admin() as channel:
            return await agent_pb.AgentStub(channel).get_agent(
                agent_pb.GetAgentRequest(id=wire_id(agent_id))
            )


def wire_id(spiffe_id: SpiffeId) -> pb.Spiffeid:
    return pb.Spiffeid(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


def workload_entry(path: str, parent: SpiffeId, **fields: object) -> pb.Entry:
    return pb.Entry(
        spiffe_id=wire_id(SpiffeId.from_path(TD, path)),
        parent_id=wire_id(parent),
        selectors=[pb.Selector(type="unix", value="uid:1000")],
        **fields,  # type: ignore[arg-type]
    )


def make_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def make_ca(
    common_name: str = "test ca",
) -> tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.DER), certificate


class FixedJitter(random.Random):
    """A random source whose ``uniform`` and ``random`` always return ``value`` (clamped to
    their range)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return min(max(self.value, a), b)

    def random(self) -> float:
        return min(max(self.value, 0.0), 1.0)


@dataclass
class Agent:
    """The parts of one agent process, rebuilt from the same directory to simulate a restart."""

    directory: Path
    server: RunningServer
    clock: FakeClock
    token: str = ""
    bootstrap: BootstrapTrust | None = None
    jitter: float = 0.0
    attestor: tuple[str, AgentNodeAttestor] | None = None
    client_type: type[ServerClient] = ServerClient
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def build(self) -> tuple[NodeIdentity, ServerClient]:
        host = make_host_services(self.directory, clock=self.clock, plugin_name="join_token")
        keys = DiskKeyManager()
        await keys.configure(DiskKeyManagerConfig(keys_path=self.directory / "keys.json"), host)
        attestor = AgentJoinTokenAttestor()
        await attestor.configure(AgentJoinTokenConfig(token=self.token), host)
        bootstrap = self.bootstrap
        if bootstrap is None:
            bootstrap = BootstrapTrust(bundle=await self.server.bundle(), source="test")
        client = self.client_type(
            trust_domain=TD, address="127.0.0.1", port=self.server.port, bundle=None
        )
        name, chosen = self.attestor or ("join_token", attestor)
        identity = NodeIdentity(
            client=client,
            attestor_name=name,
            attestor=chosen,
            key_manager=keys,
            store=AgentStateStore(self.directory, TD),
            bootstrap=bootstrap,
            clock=self.clock,
            rng=FixedJitter(self.jitter),
        )
        self.closers += [client.close, attestor.close, keys.close]
        return identity, client

    async def close(self) -> None:
        while self.closers:
            await self.closers.pop()()


class ServerReverseAttestor:
    """Server half of a reattestable test attestor: the payload names the node; the agent must
    answer the challenge ``reverse:<payload>`` with the payload reversed. The first ``busy``
    attestations are refused as over the server's rate limit."""

    def __init__(self) -> None:
        self.calls = 0
        self.busy = 0

    async def configure(self, config: object, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        self.calls += 1
        if self.busy:
            # What the server's attestation rate limit answers (RESOURCE_EXHAUSTED).
            self.busy -= 1
            raise ResourceExhaustedError(
                "rejecting agent attestation from 127.0.0.1: over the limit of 1 per second"
            )
        answer = await challenge(b"reverse:" + payload)
        if answer != payload[::-1]:
            raise PermissionDeniedError("challenge answer is wrong")
        return AttestationResult(
            agent_id=agent_id(TD, "reverse", payload.decode()),
            selector_values=("node:" + payload.decode(),),
            can_reattest=True,
        )


class AgentReverseAttestor:
    """Agent half of :class:`ServerReverseAttestor`."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.challenges: list[bytes] = []

    async def configure(self, config: object, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def attestation_payload(self) -> bytes:
        return self.node.encode()

    async def answer_challenge(self, challenge: bytes) -> bytes:
        self.challenges.append(challenge)
        if not challenge.startswith(b"reverse:"):
            raise InvalidArgumentError("challenge is not a reverse challenge")
        return challenge.removeprefix(b"reverse:")[::-1]


@pytest.fixture(scope="module")
def discovery() -> Discovery:
    return Discovery.load()


@pytest.fixture
async def server(tmp_path: Path, discovery: Discovery) -> AsyncIterator[RunningServer]:
    running = RunningServer(tmp_path / "server", discovery)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=datetime.now(UTC))


@pytest.fixture
async def agent(tmp_path: Path, server: RunningServer, clock: FakeClock) -> AsyncIterator[Agent]:
    parts = Agent(directory=tmp_path / "agent", server=server, clock=clock)
    parts.token = await server.join_token()
    try:
        yield parts
    finally:
        await parts.close()


async def until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait (in real time, for network I/O) until ``predicate()`` holds, at most ``limit`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
