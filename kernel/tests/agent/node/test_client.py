"""The server client against a real server: AgentServerApi calls, batching, the sync protocol,
the server ID check and the mapping of failures to SDK errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpclib.const
import grpclib.server
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib._typing import IServable
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from pyspire.agent import client as client_module
from pyspire.agent.client import (
    ATTESTATION_TIMEOUT,
    DEFAULT_CALL_TIMEOUT,
    SVID_BATCH_SIZE,
    ServerCallError,
    ServerClient,
    ServerIdentityError,
)
from pyspire.agent.node_identity import NodeIdentity
from pyspire.agent.server_api import AgentServerApi, SvidRequest
from pyspire.catalog import Discovery
from pyspire.proto.convert import bundle_to_proto
from pyspire.proto.gen.codec import spire_api_server_svid_v1 as svid_wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.messages import EncodedMessage, unary_route
from pyspire.server.api.entry import EntryService
from pyspire.transport.h2_lean import LeanH2Connection
from pyspire.transport.hpack_memo import MemoDecoder, MemoEncoder
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import serve_tcp
from pyspire.transport.tls import RotatingServerContext, spiffe_id_of
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from pyspire_sdk.model import AttestationResult, RegistrationEntry
from pyspire_sdk.plugins.node_attestor import Challenger
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

from . import test_svid_reply as wire
from .conftest import (
    TD,
    Agent,
    AgentReverseAttestor,
    RunningServer,
    ServerReverseAttestor,
    make_ca,
    make_csr,
    workload_entry,
)


@pytest.fixture
async def attested(agent: Agent) -> tuple[NodeIdentity, ServerClient]:
    identity, client = await agent.build()
    await identity.start()
    return identity, client


async def authorized(client: ServerClient, count: int) -> list[RegistrationEntry]:
    """The authorized entries once the server's cache shows ``count`` of them."""
    for _ in range(200):
        entries = await client.fetch_authorized_entries()
        if len(entries) == count:
            return entries
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server never authorized {count} entries")


def test_the_client_implements_the_sync_managers_seam() -> None:
    def accepts(api: AgentServerApi) -> AgentServerApi:
        return api

    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=1, bundle=None)
    assert accepts(client) is client


async def test_bundle_entries_svids_and_jwt(
    agent: Agent, attested: tuple[NodeIdentity, ServerClient]
) -> None:
    identity, client = attested
    assert await client.fetch_bundle() == await agent.server.bundle()
    assert await client.fetch_federated_bundle(TrustDomain("other.org")) is None

    created = await agent.server.create_entries(
        workload_entry("/web", identity.spiffe_id, hint="web"),
        workload_entry("/db", identity.spiffe_id, dns_names=["db.local"]),
    )
    entries = await authorized(client, 2)
    by_id = {entry.id: entry for entry in entries}
    assert set(by_id) == {entry.id for entry in created}
    web = next(e for e in entries if e.spiffe_id.path == "/web")
    assert web.hint == "web"
    assert web.parent_id == identity.spiffe_id

    requests = [SvidRequest(entry.id, make_csr()) for entry in created]
    requests.append(SvidRequest("no-such-entry", make_csr()))
    results = await client.new_x509_svids(requests)
    assert [result.entry_id for result in results] == [r.entry_id for r in requests]
    for request, result in zip(requests[:2], results[:2], strict=True):
        assert result.svid is not None and result.error == ""
        assert result.svid.private_key is None
        assert result.svid.spiffe_id == spiffe_id_of(result.svid.cert_chain[0])
        assert result.svid.spiffe_id.path in {"/web", "/db"}
        csr = x509.load_der_x509_csr(request.csr_der)
        leaf = x509.load_der_x509_certificate(result.svid.cert_chain[0])
        assert leaf.public_key() == csr.public_key()
    assert results[2].svid is None
    assert results[2].error == "NOT_FOUND: entry not found or not authorized"

    jwt = await client.new_jwt_svid(created[0].id, ["aud-1", "aud-2"])
    assert jwt.spiffe_id.path == "/web"
    assert jwt.audience == ("aud-1", "aud-2")
    assert jwt.token.count(".") == 2
    assert jwt.expires_at > jwt.issued_at

    with pytest.raises(NotFoundError, match=r"entry not found or not authorized"):
        await client.new_jwt_svid("no-such-entry", ["aud"])
    with pytest.raises(InvalidArgumentError, match=r"audience"):
        await client.new_jwt_svid(created[0].id, [])


async def test_csrs_go_in_batches_the_server_accepts(
    agent: Agent, attested: tuple[NodeIdentity, ServerClient]
) -> None:
    identity, client = attested
    created = await agent.server.create_entries(workload_entry("/web", identity.spiffe_id))
    await authorized(client, 1)
    # The server refuses more than SVID_BATCH_SIZE params in one call, so getting an answer
    # for each of these proves they were split; unknown entries keep the test fast.
    csr = make_csr()
    requests = [SvidRequest(f"missing-{index}", csr) for index in range(2 * SVID_BATCH_SIZE + 1)]
    requests[SVID_BATCH_SIZE] = SvidRequest(created[0].id, csr)
    results = await client.new_x509_svids(requests)
    assert len(results) == len(requests)
    assert [r.entry_id for r in results] == [r.entry_id for r in requests]
    assert results[SVID_BATCH_SIZE].svid is not None
    assert sum(1 for r in results if r.svid is None) == 2 * SVID_BATCH_SIZE


@pytest.fixture
async def paged_server(tmp_path: Path, discovery: Discovery) -> AsyncIterator[RunningServer]:
    running = RunningServer(tmp_path / "paged-server", discovery, sync_page_size=2)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_sync_asks_only_for_entries_it_lacks(
    tmp_path: Path, paged_server: RunningServer
) -> None:
    agent = Agent(
        directory=tmp_path / "agent",
        server=paged_server,
        clock=FakeClock(start=datetime.now(UTC)),
    )
    agent.token = await paged_server.join_token()
    try:
        identity, client = await agent.build()
        await identity.start()
        created = await paged_server.create_entries(
            *(workload_entry(f"/w{index}", identity.spiffe_id) for index in range(5))
        )
        with structlog.testing.capture_logs() as logs:
            entries = await authorized(client, 5)
        synced = [log for log in logs if log["event"] == "authorized entries synced"]
        assert synced[-1]["fetched"] == 5
        assert {e.id for e in entries} == {c.id for c in created}

        changed = created[2]
        changed.hint = "changed"
        updated = await paged_server.update_entry(changed)
        for _ in range(200):
            with structlog.testing.capture_logs() as logs:
                entries = await client.fetch_authorized_entries()
            if any(e.hint == "changed" for e in entries):
                break
            await asyncio.sleep(0.02)
        synced = [log for log in logs if log["event"] == "authorized entries synced"]
        assert synced[-1]["fetched"] == 1
        assert synced[-1]["entries"] == 5
        renewed = next(e for e in entries if e.id == updated.id)
        assert renewed.revision_number == updated.revision_number
    finally:
        await agent.close()


async def test_calls_before_attestation_are_refused_locally(agent: Agent) -> None:
    client = ServerClient(
        trust_domain=TD,
        address="127.0.0.1",
        port=agent.server.port,
        bundle=await agent.server.bundle(),
    )
    try:
        with pytest.raises(PermissionDeniedError, match=r"must attest"):
            await client.fetch_authorized_entries()
        # Anyone may fetch the bundle, so the anonymous connection serves it.
        assert await client.fetch_bundle() == await agent.server.bundle()
    finally:
        await client.close()


async def test_a_bundle_that_does_not_trust_the_server_fails_the_handshake(
    agent: Agent,
) -> None:
    _, other_ca, _ = make_ca()
    client = ServerClient(
        trust_domain=TD,
        address="127.0.0.1",
        port=agent.server.port,
        bundle=Bundle(TD, (X509Authority(other_ca),)),
    )
    try:
        with pytest.raises(UnavailableError, match=r"cannot verify the server"):
            await client.fetch_bundle()
    finally:
        await client.close()


async def test_a_stopped_server_is_unavailable(tmp_path: Path) -> None:
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=1, bundle=None)
    try:
        with pytest.raises(UnavailableError, match=r"cannot reach the server at 127\.0\.0\.1:1"):
            await client.fetch_bundle()
    finally:
        await client.close()


# -- the server ID check ----------------------------------------------------------------------


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, uris: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "SPIRE")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    return key, certificate.public_bytes(serialization.Encoding.DER)


class FixedBundle(bundle_pb.BundleBase):
    """A Bundle service that serves one bundle to anyone."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    async def get_bundle(self, get_bundle_request: bundle_pb.GetBundleRequest) -> pb.Bundle:
        return bundle_to_proto(self.bundle)


@pytest.fixture
def ca() -> tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate]:
    return make_ca()


async def serve_as(
    ca: tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate],
    uris: list[str],
    *services: IServable,
) -> tuple[Server, int]:
    """A TLS server presenting a leaf with ``uris`` issued by ``ca`` (and trusting clients
    that ``ca`` issued), of ``services`` or else of a fixed bundle."""
    ca_key, ca_der, ca_certificate = ca
    key, leaf = make_leaf(ca_key, ca_certificate, uris)
    tls = RotatingServerContext()
    await tls.update([leaf], key, [ca_der])
    server = Server(
        list(services) or [FixedBundle(Bundle(TD, (X509Authority(ca_der),), refresh_hint=60))]
    )
    await server.start("127.0.0.1", 0, ssl=tls.listening)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return server, int(port)


class DeadlineRecorder:
    """GetBundle and AttestAgent handlers that note the deadline each call arrived with;
    AttestAgent then answers UNAVAILABLE, as a server too busy to admit it does."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.seconds_left: dict[str, float | None] = {}

    def _note(self, name: str, stream: grpclib.server.Stream[Any, Any]) -> None:
        deadline = stream.deadline
        self.seconds_left[name] = None if deadline is None else deadline.time_remaining()

    async def _get_bundle(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        self._note("GetBundle", stream)
        await stream.recv_message()
        await stream.send_message(bundle_to_proto(self.bundle))

    async def _attest_agent(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        self._note("AttestAgent", stream)
        await stream.recv_message()
        raise GRPCError(Status.UNAVAILABLE, "server busy")

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            "/spire.api.server.bundle.v1.Bundle/GetBundle": grpclib.const.Handler(
                self._get_bundle,
                grpclib.const.Cardinality.UNARY_UNARY,
                bundle_pb.GetBundleRequest,
                pb.Bundle,
            ),
            "/spire.api.server.agent.v1.Agent/AttestAgent": grpclib.const.Handler(
                self._attest_agent,
                grpclib.const.Cardinality.STREAM_STREAM,
                agent_pb.AttestAgentRequest,
                agent_pb.AttestAgentResponse,
            ),
        }


async def test_attestation_may_wait_longer_than_other_calls(
    ca: tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate],
) -> None:
    """A storm's attestations queue at the server: AttestAgent's deadline leaves room to wait
    there and is sent, so the server's admission knows it; every other call keeps the short
    one on the agent's side and sends none."""
    bundle = Bundle(TD, (X509Authority(ca[1]),))
    recorder = DeadlineRecorder(bundle)
    server, port = await serve_as(
        ca, [str(SpiffeId.from_segments(TD, "spire", "server"))], recorder
    )
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=bundle)
    try:
        await client.fetch_bundle()
        with pytest.raises(UnavailableError, match="server busy"):
            await client.attest("reverse", AgentReverseAttestor("node-1"), make_csr())
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert recorder.seconds_left["GetBundle"] is None
    attestation_left = recorder.seconds_left["AttestAgent"]
    assert attestation_left is not None
    assert ATTESTATION_TIMEOUT - 5 < attestation_left <= ATTESTATION_TIMEOUT
    assert ATTESTATION_TIMEOUT >= 3 * DEFAULT_CALL_TIMEOUT


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        (["spiffe://example.org/workload"], r"presented 'spiffe://example.org/workload'"),
        (["spiffe://other.org/spire/server"], r"presented 'spiffe://other.org/spire/server'"),
        ([], r"did not present an X509-SVID"),
    ],
)
async def test_a_server_with_another_id_is_refused(
    ca: tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate],
    uris: list[str],
    message: str,
) -> None:
    server, port = await serve_as(ca, uris)
    client = ServerClient(
        trust_domain=TD, address="127.0.0.1", port=port, bundle=Bundle(TD, (X509Authority(ca[1]),))
    )
    try:
        with pytest.raises(ServerIdentityError, match=message):
            await client.fetch_bundle()
        # A refusal of the server's identity is never taken for the server refusing the agent.
        with pytest.raises(UnavailableError):
            await client.fetch_bundle()
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_the_right_server_id_passes_the_check(
    ca: tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate],
) -> None:
    server, port = await serve_as(ca, [str(SpiffeId.from_segments(TD, "spire", "server"))])
    client = ServerClient(
        trust_domain=TD, address="127.0.0.1", port=port, bundle=Bundle(TD, (X509Authority(ca[1]),))
    )
    try:
        bundle = await client.fetch_bundle()
        assert bundle.refresh_hint == 60
        assert bundle.x509_authorities == (X509Authority(ca[1]),)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_reads_the_servers_certificate_once_and_a_new_one_again(
    ca: tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every call checks the server's ID, but a connection's calls all see the certificate its
    handshake got: it is read once. A connection made again (the server came back, now with
    another ID) is checked again."""
    read: list[bytes] = []
    spiffe_id_of = client_module.spiffe_id_of

    def reading(certificate: bytes) -> SpiffeId:
        read.append(certificate)
        return spiffe_id_of(certificate)

    async def serve(uri: str, port: int) -> tuple[Server, int]:
        """A server that closes its connections as it closes (pyspire's listener)."""
        key, leaf = make_leaf(ca[0], ca[2], [uri])
        tls = RotatingServerContext()
        await tls.update([leaf], key, [ca[1]])
        server = Server([FixedBundle(Bundle(TD, (X509Authority(ca[1]),), refresh_hint=60))])
        listener = await serve_tcp(
            server,
            "127.0.0.1",
            port,
            tls=tls.listening,
            limits=ConnectionLimits(max_connections=4),
            name="test",
        )
        return server, int(listener.sockets[0].getsockname()[1])

    monkeypatch.setattr(client_module, "spiffe_id_of", reading)
    server, port = await serve(str(SpiffeId.from_segments(TD, "spire", "server")), 0)
    client = ServerClient(
        trust_domain=TD, address="127.0.0.1", port=port, bundle=Bundle(TD, (X509Authority(ca[1]),))
    )
    try:
        for _ in range(3):
            await client.fetch_bundle()
        assert len(read) == 1
        server.close()
        await server.wait_closed()
        server, _ = await serve("spiffe://example.org/workload", port)
        with pytest.raises(
            ServerIdentityError, match=r"presented 'spiffe://example\.org/workload'"
        ):
            await client.fetch_bundle()
        assert len(read) == 2
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_calls_go_over_a_lean_connection_each_request_in_one_write(
    attested: tuple[NodeIdentity, ServerClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's connection to a real server codes HTTP/2 as the server's do (no frame
    formatted for a trace log, repeated header blocks from a memo) and sends a call's request
    headers and message in one TLS record and one write."""
    _, client = attested
    for _ in range(3):
        await client.fetch_bundle()
        await client.fetch_authorized_entries()
        await client.new_x509_svids([])
    connection = client._authenticated
    assert connection is not None
    protocol = connection.channel._protocol  # type: ignore[attr-defined]
    h2_connection = protocol.connection._connection
    assert isinstance(h2_connection, LeanH2Connection)
    assert isinstance(h2_connection.encoder, MemoEncoder) and h2_connection.encoder._memo
    assert isinstance(h2_connection.decoder, MemoDecoder) and h2_connection.decoder._memo
    transport = protocol.connection._transport
    tls_transport = getattr(transport, "inner", transport)
    writes: list[bytes] = []
    write = tls_transport.write

    def recording(data: Any) -> None:
        writes.append(bytes(data))
        write(data)

    monkeypatch.setattr(tls_transport, "write", recording)
    await client.fetch_bundle()
    assert len(writes) == 1


async def test_sync_sends_every_request_for_entries_before_reading_the_answers(
    tmp_path: Path, paged_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries asked for in several requests (two ids each here) all arrive, in pages of two,
    although every request went out before the first answer was read."""
    monkeypatch.setattr(client_module, "SYNC_IDS_PER_REQUEST", 2)
    agent = Agent(
        directory=tmp_path / "agent",
        server=paged_server,
        clock=FakeClock(start=datetime.now(UTC)),
    )
    agent.token = await paged_server.join_token()
    try:
        identity, client = await agent.build()
        await identity.start()
        created = await paged_server.create_entries(
            *(workload_entry(f"/w{index}", identity.spiffe_id) for index in range(7))
        )
        with structlog.testing.capture_logs() as logs:
            entries = await authorized(client, 7)
        synced = [log for log in logs if log["event"] == "authorized entries synced"]
        assert synced[-1]["fetched"] == 7
        assert {e.id for e in entries} == {c.id for c in created}
    finally:
        await agent.close()


class CannedSvid(svid_pb.SvidBase):
    """An SVID service that answers BatchNewX509SVID with the wire bytes it is given."""

    def __init__(self, *replies: bytes) -> None:
        self.replies = list(replies)
        self.requests: list[svid_wire.BatchNewX509SVIDRequest] = []

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        mapping["/spire.api.server.svid.v1.SVID/BatchNewX509SVID"] = unary_route(
            self.sign, svid_wire.BatchNewX509SVIDRequest
        )
        return mapping

    async def sign(self, request: svid_wire.BatchNewX509SVIDRequest) -> EncodedMessage[object]:
        self.requests.append(request)
        return EncodedMessage(self.replies.pop(0))


async def test_batch_replies_are_read_off_the_wire_as_googles_runtime_reads_them(
    ca: tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate],
) -> None:
    reply = wire.response(
        wire.result(wire.status(0, "OK"), wire.svid(hint="web") + wire.UNKNOWN) + wire.UNKNOWN,
        wire.result(wire.status(5, "entry not found or not authorized")),
        wire.result(None, wire.svid(chain=[])),
    )
    service = CannedSvid(reply, reply + b"\x0a\x05", wire.response(wire.result(None, wire.svid())))
    server, port = await serve_as(ca, [str(SpiffeId.from_segments(TD, "spire", "server"))], service)
    agent_key, agent_leaf = make_leaf(ca[0], ca[2], ["spiffe://example.org/spire/agent/x/1"])
    client = ServerClient(
        trust_domain=TD, address="127.0.0.1", port=port, bundle=Bundle(TD, (X509Authority(ca[1]),))
    )
    client.use_identity([agent_leaf], agent_key)
    requests = [SvidRequest(f"entry-{index}", f"csr-{index}".encode()) for index in range(3)]
    try:
        found = await client.new_x509_svids(requests)
        assert found == wire.google_results(reply, [r.entry_id for r in requests])
        assert found[0].svid is not None and found[0].svid.hint == "web"
        assert found[1].error == "NOT_FOUND: entry not found or not authorized"
        assert found[2].error.startswith("malformed SVID from server: ")
        assert [(p.entry_id, p.csr) for p in service.requests[0].params] == [
            (r.entry_id, r.csr_der) for r in requests
        ]
        with pytest.raises(ServerCallError, match=r"^server sent a malformed BatchNewX509SVID "):
            await client.new_x509_svids(requests)
        with pytest.raises(ServerCallError, match=r"^server answered 1 results to 3 CSRs$"):
            await client.new_x509_svids(requests)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


class EntryServiceWithoutSync(EntryService):
    """An Entry service of a server that predates SyncAuthorizedEntries."""

    async def sync_authorized_entries(  # type: ignore[override]
        self, sync_authorized_entries_request_iterator: AsyncIterator[object]
    ) -> AsyncIterator[object]:
        raise GRPCError(Status.UNIMPLEMENTED, "Method not found")
        yield  # type: ignore[unreachable]  # an async generator, like the method it replaces


async def test_sync_falls_back_to_get_authorized_entries_when_unimplemented(
    tmp_path: Path, discovery: Discovery
) -> None:
    server = RunningServer(
        tmp_path / "old-server", discovery, entry_service=EntryServiceWithoutSync
    )
    await server.start()
    agent = Agent(
        directory=tmp_path / "agent", server=server, clock=FakeClock(start=datetime.now(UTC))
    )
    try:
        agent.token = await server.join_token()
        identity, client = await agent.build()
        await identity.start()
        await server.create_entries(workload_entry("/web", identity.spiffe_id))
        entries = await authorized(client, 1)
        assert [e.spiffe_id.path for e in entries] == ["/web"]
    finally:
        await agent.close()
        await server.stop()


class _Judging(ServerReverseAttestor):
    """Notes when it has judged, in the same list as the agent half notes its steps."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        try:
            return await super().attest(payload, challenge)
        finally:
            self.events.append("verdict")


class _ScopedReverse(AgentReverseAttestor):
    """An agent half with an attestation scope, answering wrongly when told to."""

    def __init__(self, node: str, events: list[str], *, wrong: bool = False) -> None:
        super().__init__(node)
        self.events = events
        self.wrong = wrong

    def attestation_scope(self) -> contextlib.AbstractAsyncContextManager[None]:
        @contextlib.asynccontextmanager
        async def scope() -> AsyncIterator[None]:
            self.events.append("enter")
            try:
                yield
            finally:
                self.events.append("exit")

        return scope()

    async def answer_challenge(self, challenge: bytes) -> bytes:
        self.events.append("answer")
        answer = await super().answer_challenge(challenge)
        return answer[::-1] if self.wrong else answer


async def test_the_attestors_scope_lasts_until_the_servers_verdict(
    tmp_path: Path, discovery: Discovery
) -> None:
    events: list[str] = []
    server = RunningServer(
        tmp_path / "server", discovery, node_attestors={"reverse": _Judging(events)}
    )
    await server.start()
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=server.port, bundle=None)
    try:
        result = await client.attest("reverse", _ScopedReverse("node-1", events), make_csr())
        assert result.svid.spiffe_id == SpiffeId.parse(
            "spiffe://example.org/spire/agent/reverse/node-1"
        )
        assert events == ["enter", "answer", "verdict", "exit"]

        events.clear()
        refused = _ScopedReverse("node-2", events, wrong=True)
        with pytest.raises(PermissionDeniedError, match="challenge answer is wrong"):
            await client.attest("reverse", refused, make_csr())
        assert events == ["enter", "answer", "verdict", "exit"]
    finally:
        await client.close()
        await server.stop()


async def _delete_entry(server: RunningServer, entry_id: str) -> None:
    async with server.admin() as channel:
        reply = await entry_pb.EntryStub(channel).batch_delete_entry(
            entry_pb.BatchDeleteEntryRequest(ids=[entry_id])
        )
    assert reply.results[0].status.code == 0, reply.results[0].status.message


async def _incremental_sync(
    server: RunningServer, client: ServerClient, agent_id: SpiffeId
) -> None:
    """Entries created, updated and deleted between syncs: each sync gives exactly the server's
    set and decodes only the entries that changed."""
    held = client.held_entries
    created = await server.create_entries(
        *(workload_entry(f"/inc{index}", agent_id) for index in range(5))
    )
    first = await authorized(client, 5)
    assert [entry.id for entry in first] == [entry.id for entry in created]
    assert held.decoded == 5

    again = await client.fetch_authorized_entries()
    assert again == first
    assert all(a is b for a, b in zip(again, first, strict=True))  # nothing decoded again
    assert held.decoded == 5

    changed = created[1]
    changed.hint = "changed"
    updated = await server.update_entry(changed)
    synced = await client.fetch_authorized_entries()
    assert held.decoded == 6
    by_id = {entry.id: entry for entry in synced}
    assert by_id[updated.id].hint == "changed"
    assert by_id[updated.id].revision_number == updated.revision_number
    assert sorted(entry.id for entry in synced) == sorted(entry.id for entry in created)

    await _delete_entry(server, created[3].id)
    synced = await client.fetch_authorized_entries()
    assert sorted(entry.id for entry in synced) == sorted(
        entry.id for index, entry in enumerate(created) if index != 3
    )
    assert held.decoded == 6

    (added,) = await server.create_entries(workload_entry("/inc-new", agent_id))
    synced = await client.fetch_authorized_entries()
    assert added.id in {entry.id for entry in synced}
    assert len(synced) == 5
    assert held.decoded == 7
    assert len(held) == 5


async def test_a_full_answer_sync_decodes_only_changed_entries(
    attested: tuple[NodeIdentity, ServerClient], server: RunningServer
) -> None:
    identity, client = attested
    await _incremental_sync(server, client, identity.spiffe_id)


async def test_a_revisions_sync_asks_for_and_decodes_only_changed_entries(
    tmp_path: Path, paged_server: RunningServer
) -> None:
    agent = Agent(
        directory=tmp_path / "agent", server=paged_server, clock=FakeClock(start=datetime.now(UTC))
    )
    agent.token = await paged_server.join_token()
    try:
        identity, client = await agent.build()
        await identity.start()
        await _incremental_sync(paged_server, client, identity.spiffe_id)
    finally:
        await agent.close()


async def test_a_small_whole_set_ends_the_next_call_early_and_a_grown_one_is_asked_again(
    tmp_path: Path, paged_server: RunningServer
) -> None:
    """After a whole-set answer the agent ends its side with its first request; when the set
    has grown past the page size, the answer comes as revisions, which need requests that
    stream can no longer carry, so the call is made again (once) and the set arrives whole."""
    sync = "/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries"
    agent = Agent(
        directory=tmp_path / "agent",
        server=paged_server,
        clock=FakeClock(start=datetime.now(UTC)),
    )
    agent.token = await paged_server.join_token()
    try:
        identity, client = await agent.build()
        await identity.start()
        await paged_server.create_entries(workload_entry("/w0", identity.spiffe_id))
        await authorized(client, 1)  # a whole set (the page size is 2)
        calls = paged_server.calls(sync)
        await client.fetch_authorized_entries()
        assert paged_server.calls(sync) == calls + 1

        created = await paged_server.create_entries(
            *(workload_entry(f"/w{index}", identity.spiffe_id) for index in range(1, 4))
        )
        # The batch refreshes the server's registry before it returns: the next sync sees 4.
        before = paged_server.calls(sync)
        entries = await client.fetch_authorized_entries()
        assert {e.id for e in created} <= {e.id for e in entries}
        assert paged_server.calls(sync) == before + 2
        # Revisions last time: no early end, one call.
        calls = paged_server.calls(sync)
        assert len(await client.fetch_authorized_entries()) == 4
        assert paged_server.calls(sync) == calls + 1
    finally:
        await agent.close()


class SilentBundle(bundle_pb.BundleBase):
    """A Bundle service whose GetBundle notes the deadline the caller sent (grpc-timeout) and
    never answers."""

    def __init__(self) -> None:
        self.deadlines: list[object] = []

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()

        async def silent(stream: Any) -> None:
            self.deadlines.append(stream.deadline)
            await stream.recv_message()
            await asyncio.Event().wait()

        mapping["/spire.api.server.bundle.v1.Bundle/GetBundle"] = grpclib.const.Handler(
            silent,
            grpclib.const.Cardinality.UNARY_UNARY,
            bundle_pb.GetBundleRequest,
            EncodedMessage,
        )
        return mapping


async def test_the_call_time_limit_is_kept_by_the_agent_not_sent(
    ca: tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate],
) -> None:
    service = SilentBundle()
    server, port = await serve_as(ca, [str(SpiffeId.from_segments(TD, "spire", "server"))], service)
    client = ServerClient(
        trust_domain=TD,
        address="127.0.0.1",
        port=port,
        bundle=Bundle(TD, (X509Authority(ca[1]),)),
        timeout=0.3,
    )
    try:
        with pytest.raises(UnavailableError, match="cannot reach the server"):
            await client.fetch_bundle()
        assert service.deadlines == [None]
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
