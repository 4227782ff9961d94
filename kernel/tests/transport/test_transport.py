"""SPIFFE mTLS and unix-socket peer identity over real grpclib connections."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpclib.server
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.transport.calls import WithCallContext, current_stream
from pyspire.transport.peer import peer_certificate, peer_connection, peer_credentials
from pyspire.transport.tls import (
    RotatingServerContext,
    build_client_context,
    spiffe_id_of,
)
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError

NOW = datetime.now(UTC)


def issue(
    uri: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, uri)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


class RecordingHealth(health.HealthBase):
    """Answers SERVING and records what the transport says about each caller."""

    def __init__(self) -> None:
        self.callers: list[Any] = []
        self.connections: list[object] = []

    async def check(
        self, health_check_request: health.HealthCheckRequest
    ) -> health.HealthCheckResponse:
        peer = current_stream().peer
        self.connections.append(peer_connection(peer))
        try:
            self.callers.append(peer_certificate(peer))
        except Exception as error:
            self.callers.append(error)
        return health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)


@pytest.fixture
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return issue("spiffe://example.org")


@pytest.fixture
async def tls_server(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> AsyncIterator[tuple[grpclib.server.Server, RecordingHealth, RotatingServerContext, int]]:
    service = RecordingHealth()
    server = grpclib.server.Server([WithCallContext(service)])
    contexts = RotatingServerContext()
    cert, key = issue("spiffe://example.org/spire/server", ca)
    await contexts.update([der(cert)], key, [der(ca[0])])
    await server.start("127.0.0.1", 0, ssl=contexts.listening)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server, service, contexts, port
    server.close()
    await server.wait_closed()


async def check(channel: Channel) -> health.HealthCheckResponse:
    return await health.HealthStub(channel).check(health.HealthCheckRequest())


async def test_server_sees_the_client_svid(
    tls_server: tuple[Any, RecordingHealth, RotatingServerContext, int],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    _, service, _, port = tls_server
    agent_cert, agent_key = issue("spiffe://example.org/spire/agent/join_token/x", ca)
    context = build_client_context([der(ca[0])], [der(agent_cert)], agent_key)
    channel = Channel("127.0.0.1", port, ssl=context)
    try:
        await check(channel)
    finally:
        channel.close()
    assert str(spiffe_id_of(service.callers[-1])) == "spiffe://example.org/spire/agent/join_token/x"


@pytest.mark.parametrize("mutual", [False, True], ids=["anonymous", "mutual"])
async def test_the_server_issues_no_session_tickets(
    tls_server: tuple[Any, RecordingHealth, RotatingServerContext, int],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    mutual: bool,
) -> None:
    """No client resumes a session, and a ticket costs the server a third of a handshake."""
    _, _, _, port = tls_server
    agent_cert, agent_key = issue("spiffe://example.org/spire/agent/join_token/x", ca)
    if mutual:
        context = build_client_context([der(ca[0])], [der(agent_cert)], agent_key)
    else:
        context = build_client_context([der(ca[0])])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        # The server's HTTP/2 settings follow its tickets, if it sends any.
        assert await reader.read(1)
        session = writer.get_extra_info("ssl_object").session
        assert session is not None
        assert not session.has_ticket
    finally:
        writer.close()


async def test_calls_on_one_connection_share_its_identity_key(
    tls_server: tuple[Any, RecordingHealth, RotatingServerContext, int],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    """``peer_connection`` is the same object for every call on a connection, another one for
    another connection: what is learnt about a caller can be kept per connection."""
    _, service, _, port = tls_server
    context = build_client_context([der(ca[0])])
    first, second = (Channel("127.0.0.1", port, ssl=context) for _ in range(2))
    try:
        await check(first)
        await check(first)
        await check(second)
    finally:
        first.close()
        second.close()
    one, again, other = service.connections[-3:]
    assert one is again
    assert one is not other


async def test_client_without_svid_is_anonymous(
    tls_server: tuple[Any, RecordingHealth, RotatingServerContext, int],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    _, service, _, port = tls_server
    channel = Channel("127.0.0.1", port, ssl=build_client_context([der(ca[0])]))
    try:
        await check(channel)
    finally:
        channel.close()
    assert service.callers[-1] is None


async def test_client_refuses_a_server_outside_its_bundle(
    tls_server: tuple[Any, RecordingHealth, RotatingServerContext, int],
) -> None:
    _, _, _, port = tls_server
    stranger, _ = issue("spiffe://other.org")
    channel = Channel("127.0.0.1", port, ssl=build_client_context([der(stranger)]))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, GRPCError, OSError)):
            await check(channel)
    finally:
        channel.close()


async def test_rotation_serves_new_connections_with_the_new_svid(
    tls_server: tuple[Any, RecordingHealth, RotatingServerContext, int],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    _, _, contexts, port = tls_server
    new_ca = issue("spiffe://example.org")
    cert, key = issue("spiffe://example.org/spire/server", new_ca)
    await contexts.update([der(cert)], key, [der(new_ca[0])])
    # A client that trusts only the old CA can no longer connect; one that trusts the new can.
    old = Channel("127.0.0.1", port, ssl=build_client_context([der(ca[0])]))
    new = Channel("127.0.0.1", port, ssl=build_client_context([der(new_ca[0])]))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, GRPCError, OSError)):
            await check(old)
        response = await check(new)
        assert response.status == health.HealthCheckResponseServingStatus.SERVING
    finally:
        old.close()
        new.close()


async def test_unix_socket_peer_credentials(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Credentials(health.HealthBase):
        async def check(
            self, health_check_request: health.HealthCheckRequest
        ) -> health.HealthCheckResponse:
            seen.append(peer_credentials(current_stream().peer))
            return health.HealthCheckResponse()

    path = str(tmp_path / "api.sock")
    server = grpclib.server.Server([WithCallContext(Credentials())])
    await server.start(path=path)
    channel = Channel(path=path)
    try:
        await check(channel)
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
    assert (seen[0].pid, seen[0].uid, seen[0].gid) == (os.getpid(), os.getuid(), os.getgid())


async def test_gate_can_refuse_a_call(tmp_path: Path) -> None:
    methods: list[str] = []

    async def gate(method: str, stream: grpclib.server.Stream[Any, Any]) -> None:
        methods.append(method)
        raise GRPCError(grpclib.const.Status.PERMISSION_DENIED, "not you")

    path = str(tmp_path / "api.sock")
    server = grpclib.server.Server([WithCallContext(RecordingHealth(), gate)])
    await server.start(path=path)
    channel = Channel(path=path)
    try:
        with pytest.raises(GRPCError) as caught:
            await check(channel)
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
    assert caught.value.status == grpclib.const.Status.PERMISSION_DENIED
    assert methods == ["/grpc.health.v1.Health/Check"]


def test_spiffe_id_of_refuses_certificates_without_one_uri() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")])
    plain = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(PermissionDeniedError, match="URI SAN"):
        spiffe_id_of(der(plain))


async def test_client_svid_from_a_foreign_ca_is_refused(
    tls_server: tuple[Any, RecordingHealth, RotatingServerContext, int],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    """The client certificate is verified against the current context's bundle: one from a CA
    the server does not trust fails the handshake instead of reaching a handler."""
    _, service, _, port = tls_server
    foreign_ca = issue("spiffe://example.org")
    cert, key = issue("spiffe://example.org/spire/agent/x", foreign_ca)
    channel = Channel("127.0.0.1", port, ssl=build_client_context([der(ca[0])], [der(cert)], key))
    try:
        # With TLS 1.3 the client learns of the refusal only when the server drops the
        # connection: grpclib reports it as a terminated stream.
        with pytest.raises((ssl.SSLError, ConnectionError, OSError, StreamTerminatedError)):
            await check(channel)
    finally:
        channel.close()
    assert service.callers == []


async def test_oversized_requests_are_refused_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "api.sock")
    service = RecordingHealth()
    server = grpclib.server.Server([WithCallContext(service, max_message_bytes=64)])
    await server.start(path=path)
    channel = Channel(path=path)
    try:
        with pytest.raises(GRPCError) as caught:
            await health.HealthStub(channel).check(health.HealthCheckRequest(service="x" * 100))
        assert caught.value.status == grpclib.const.Status.RESOURCE_EXHAUSTED
        assert "larger than the 64 bytes allowed" in str(caught.value.message)
        response = await health.HealthStub(channel).check(health.HealthCheckRequest(service="ok"))
        assert response.status == health.HealthCheckResponseServingStatus.SERVING
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00\x00\x00\x00\x03\x0a\x05a", r"not a valid HealthCheckRequest: "),
        (b"\x01\x00\x00\x00\x00", r"the message is compressed"),
        (b"\x02\x00\x00\x00\x00", r"the compressed flag is 2"),
        (b"\x00\x00\x00\x00\x09\x0a\x01", r"the stream ended inside the message$"),
        (b"\x00\x00\x00\x00\x09", r"the stream ended inside the message$"),
        (b"\x00\x00", r"the stream ended inside the message prefix$"),
        (b"", r"the call carries no request message$"),
    ],
)
async def test_malformed_requests_are_invalid_arguments_with_a_reason(
    tmp_path: Path, raw_grpc: Any, caplog: pytest.LogCaptureFixture, body: bytes, reason: str
) -> None:
    path = str(tmp_path / "api.sock")
    service = RecordingHealth()
    server = grpclib.server.Server([WithCallContext(service)])
    await server.start(path=path)
    try:
        reply = await raw_grpc.expect_malformed(
            caplog, "/grpc.health.v1.Health/Check", body, path=path
        )
    finally:
        server.close()
        await server.wait_closed()
    assert re.search(f"^malformed request: {reason}", reply.message), reply.message
    assert service.callers == []


async def test_a_decoder_that_names_the_fault_is_quoted(
    tmp_path: Path, raw_grpc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-written decoder raising InvalidArgumentError has its own message sent back."""

    class Strict(health.HealthBase):
        def __mapping__(self) -> dict[str, grpclib.const.Handler]:
            mapping = super().__mapping__()
            check = mapping["/grpc.health.v1.Health/Check"]
            mapping["/grpc.health.v1.Health/Check"] = grpclib.const.Handler(
                check.func, check.cardinality, StrictRequest, check.reply_type
            )
            return mapping

    class StrictRequest:
        @classmethod
        def FromString(cls, data: bytes) -> StrictRequest:
            raise InvalidArgumentError("malformed request: field 3 is not allowed")

    path = str(tmp_path / "api.sock")
    server = grpclib.server.Server([WithCallContext(Strict())])
    await server.start(path=path)
    try:
        reply = await raw_grpc.expect_malformed(
            caplog, "/grpc.health.v1.Health/Check", raw_grpc.frame(b"\x18\x01"), path=path
        )
    finally:
        server.close()
        await server.wait_closed()
    assert reply.message == "malformed request: field 3 is not allowed"
