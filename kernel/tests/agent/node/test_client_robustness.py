"""The server client against a real grpclib server on loopback whose handlers misbehave on
purpose: a unary call whose connection breaks under it is made once more, and once only; an
AttestAgent stream the server ends without a result reports the server's refusal from the
trailers, which the node identity does not retry as a transport failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpclib.const
import grpclib.server
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.server import Server
from pyspire_keymanager_disk import DiskKeyManager
from pyspire_keymanager_disk.config import DiskKeyManagerConfig

from pyspire.agent.bootstrap import BootstrapTrust
from pyspire.agent.client import ConnectionBrokeError, ServerCallError, ServerClient
from pyspire.agent.node_identity import NodeIdentity
from pyspire.agent.storage import AgentStateStore
from pyspire.proto.convert import bundle_to_proto
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.messages import EncodedMessage
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.errors import PermissionDeniedError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock, make_host_services

from .conftest import TD, AgentReverseAttestor, make_ca, make_csr
from .test_client import FixedBundle, make_leaf, serve_as

CA = tuple[ec.EllipticCurvePrivateKey, bytes, x509.Certificate]

_GET_FEDERATED_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetFederatedBundle"
_ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"
_SERVER_ID = str(SpiffeId.from_segments(TD, "spire", "server"))
_OTHER = TrustDomain("other.org")


UNARY_UNARY = grpclib.const.Cardinality.UNARY_UNARY
STREAM_STREAM = grpclib.const.Cardinality.STREAM_STREAM


def _one_route(
    path: str,
    handle: Callable[[grpclib.server.Stream[Any, Any]], Awaitable[None]],
    cardinality: grpclib.const.Cardinality,
    request_type: type,
    reply_type: type,
) -> Callable[[], dict[str, grpclib.const.Handler]]:
    """The ``__mapping__`` of a service of one raw handler (grpclib asks a service for it)."""
    return lambda: {path: grpclib.const.Handler(handle, cardinality, request_type, reply_type)}


def _break_connection(stream: grpclib.server.Stream[Any, Any]) -> None:
    """Close the call's TCP connection under it, as a server replacing its TLS identity (or
    going away) may. grpclib has no public call for it: its connection object does it."""
    stream._stream.connection.close()


class BreakingBundles:
    """A Bundle service whose GetFederatedBundle breaks its connection on the first ``breaks``
    calls and answers the ones after with ``bundle``."""

    def __init__(self, bundle: Bundle, breaks: int) -> None:
        self.reply = bytes(bundle_to_proto(bundle))
        self.breaks = breaks
        self.calls = 0
        self.__mapping__ = _one_route(
            _GET_FEDERATED_BUNDLE, self.handle, UNARY_UNARY, EncodedMessage, EncodedMessage
        )

    async def handle(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        self.calls += 1
        if self.calls <= self.breaks:
            _break_connection(stream)
            await asyncio.Event().wait()  # the lost connection cancels the handler
        await stream.send_message(EncodedMessage(self.reply))


async def _authenticated_client(ca: CA, port: int) -> ServerClient:
    agent_key, agent_leaf = make_leaf(ca[0], ca[2], ["spiffe://example.org/spire/agent/x/1"])
    client = ServerClient(
        trust_domain=TD, address="127.0.0.1", port=port, bundle=Bundle(TD, (X509Authority(ca[1]),))
    )
    client.use_identity([agent_leaf], agent_key)
    return client


async def _stop(server: Server) -> None:
    server.close()
    await server.wait_closed()


@pytest.fixture
def ca() -> CA:
    return make_ca()


async def test_a_unary_call_whose_connection_broke_is_made_once_more(ca: CA) -> None:
    other = Bundle(_OTHER, (X509Authority(ca[1]),))
    service = BreakingBundles(other, breaks=1)
    server, port = await serve_as(ca, [_SERVER_ID], service)
    client = await _authenticated_client(ca, port)
    try:
        assert await client.fetch_federated_bundle(_OTHER) == other
        assert service.calls == 2
    finally:
        await client.close()
        await _stop(server)


async def test_a_unary_call_is_made_once_more_and_not_more(ca: CA) -> None:
    service = BreakingBundles(Bundle(_OTHER, (X509Authority(ca[1]),)), breaks=5)
    server, port = await serve_as(ca, [_SERVER_ID], service)
    client = await _authenticated_client(ca, port)
    try:
        with pytest.raises(ConnectionBrokeError, match=r"connection to the server at .* broke"):
            await client.fetch_federated_bundle(_OTHER)
        assert service.calls == 2
    finally:
        await client.close()
        await _stop(server)


class EndingAttestation:
    """An Agent service whose AttestAgent sends one challenge, reads the answer and then ends
    the call without a result, with ``status`` in its trailers (OK: a server that simply
    stops).

    The trailers go out alone: grpclib's server would reset the stream right after them, and a
    client that reads that reset first learns the status from it, so the test would not see
    what a client sees when the trailers arrive before the reset (as they may over a real
    network). grpclib has no public call to send trailers without the reset."""

    def __init__(self, status: Status, message: str) -> None:
        self.status = status
        self.message = message
        self.calls = 0
        self.__mapping__ = _one_route(
            _ATTEST_AGENT,
            self.handle,
            STREAM_STREAM,
            agent_pb.AttestAgentRequest,
            agent_pb.AttestAgentResponse,
        )

    async def handle(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        self.calls += 1
        first = await stream.recv_message()
        assert first is not None and first.params.data.type == "reverse"
        await stream.send_message(agent_pb.AttestAgentResponse(challenge=b"reverse:node-1"))
        answer = await stream.recv_message()
        assert answer is not None and answer.challenge_response == b"1-edon"
        trailers = [("grpc-status", str(self.status.value)), ("grpc-message", self.message)]
        await stream._stream.send_headers(trailers, end_stream=True)
        stream._send_trailing_metadata_done = True


async def test_a_refusal_after_a_challenge_is_the_servers_refusal(ca: CA) -> None:
    service = EndingAttestation(Status.PERMISSION_DENIED, "the node is refused on purpose")
    server, port = await serve_as(ca, [_SERVER_ID], service)
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=None)
    try:
        with pytest.raises(PermissionDeniedError, match=r"^the node is refused on purpose$"):
            await client.attest("reverse", AgentReverseAttestor("node-1"), make_csr())
        assert service.calls == 1
    finally:
        await client.close()
        await _stop(server)


async def test_an_attestation_ended_without_a_result_or_status_is_a_call_error(ca: CA) -> None:
    """Reading the trailers does not hide a plain end: and it needs the agent's side ended
    first (read with the side open, grpclib raised a ProtocolError, taken for a broken
    connection)."""
    service = EndingAttestation(Status.OK, "")
    server, port = await serve_as(ca, [_SERVER_ID], service)
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=None)
    try:
        with pytest.raises(ServerCallError, match=r"^server ended AttestAgent without a result$"):
            await client.attest("reverse", AgentReverseAttestor("node-1"), make_csr())
    finally:
        await client.close()
        await _stop(server)


class GarbledAttestation:
    """An Agent service whose AttestAgent answers the first request with ``reply``, bytes
    that are not an AttestAgentResponse, and ends."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.__mapping__ = _one_route(
            _ATTEST_AGENT, self.handle, STREAM_STREAM, agent_pb.AttestAgentRequest, EncodedMessage
        )

    async def handle(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        first = await stream.recv_message()
        assert first is not None and first.params.data.type == "reverse"
        await stream.send_message(EncodedMessage(self.reply))


@pytest.mark.parametrize(
    "reply",
    [b"\x0a\x05\x0a", b"\x12\x80"],
    ids=["result cut short", "challenge length cut short"],
)
async def test_an_attestation_answer_that_does_not_parse_is_a_call_error(
    ca: CA, reply: bytes
) -> None:
    """The agent reads AttestAgent's answers with the generated codec: bytes that are not one
    are a malformed answer (which the node identity retries), not a crash of the codec."""
    server, port = await serve_as(ca, [_SERVER_ID], GarbledAttestation(reply))
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=None)
    try:
        with pytest.raises(ServerCallError, match=r"^server sent a malformed reply: "):
            await client.attest("reverse", AgentReverseAttestor("node-1"), make_csr())
    finally:
        await client.close()
        await _stop(server)


async def test_the_node_identity_does_not_retry_a_refusal_after_a_challenge(
    ca: CA, tmp_path: Path
) -> None:
    """Start-up attestation retries what looks like a transport failure; a refusal read from
    the trailers ends it at once."""
    bundle = Bundle(TD, (X509Authority(ca[1]),), refresh_hint=60)
    attestation = EndingAttestation(Status.PERMISSION_DENIED, "the node is refused on purpose")
    server, port = await serve_as(ca, [_SERVER_ID], FixedBundle(bundle), attestation)
    clock = FakeClock()
    host = make_host_services(tmp_path, clock=clock, plugin_name="disk")
    keys = DiskKeyManager()
    await keys.configure(DiskKeyManagerConfig(keys_path=tmp_path / "keys.json"), host)
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=None)
    identity = NodeIdentity(
        client=client,
        attestor_name="reverse",
        attestor=AgentReverseAttestor("node-1"),
        key_manager=keys,
        store=AgentStateStore(tmp_path / "agent", TD),
        bootstrap=BootstrapTrust(bundle=bundle, source="test"),
        clock=clock,
    )
    try:
        # A retried start would wait on the fake clock, which no one advances.
        with pytest.raises(PermissionDeniedError, match=r"refused on purpose"):
            await asyncio.wait_for(identity.start(), timeout=10)
        assert attestation.calls == 1
    finally:
        await client.close()
        await keys.close()
        await _stop(server)
