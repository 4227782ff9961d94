"""``serve_tcp(reuse_port=True)``: a second listener may take the port only when both ask."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpclib.server
import pytest
from cryptography.hazmat.primitives.serialization import load_der_private_key

from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import GuardedListener, serve_tcp
from pyspire.transport.tls import RotatingServerContext
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import TestAuthority

LIMITS = ConnectionLimits(
    max_connections=4,
    max_unverified_per_address=4,
    handshake_timeout=30.0,
    first_request_timeout=30.0,
    idle_timeout=30.0,
)


class Health(health.HealthBase):
    async def check(
        self, health_check_request: health.HealthCheckRequest
    ) -> health.HealthCheckResponse:
        return health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)


@pytest.fixture
async def tls() -> RotatingServerContext:
    authority = TestAuthority(TrustDomain("example.org"))
    svid = authority.issue(SpiffeId.parse("spiffe://example.org/spire/server"))
    assert svid.private_key is not None
    contexts = RotatingServerContext()
    await contexts.update(
        svid.cert_chain, load_der_private_key(svid.private_key, None), [authority.der]
    )
    return contexts


@pytest.fixture
async def servers() -> AsyncIterator[list[grpclib.server.Server]]:
    made: list[grpclib.server.Server] = []
    yield made
    for server in made:
        server.close()
        await server.wait_closed()


async def listen(
    servers: list[grpclib.server.Server],
    tls: RotatingServerContext,
    port: int,
    *,
    reuse_port: bool,
) -> GuardedListener:
    server = grpclib.server.Server([Health()])
    listener = await serve_tcp(
        server,
        "127.0.0.1",
        port,
        tls=tls.listening,
        limits=LIMITS,
        name="test",
        reuse_port=reuse_port,
    )
    servers.append(server)
    return listener


def port_and_option(listener: GuardedListener) -> tuple[int, int]:
    sock = listener.sockets[0]
    return sock.getsockname()[1], sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)


async def test_two_listeners_share_a_port_with_reuse_port(
    tls: RotatingServerContext, servers: list[grpclib.server.Server]
) -> None:
    first = await listen(servers, tls, 0, reuse_port=True)
    port, option = port_and_option(first)
    assert option != 0
    second = await listen(servers, tls, port, reuse_port=True)
    assert port_and_option(second) == (port, option)


async def test_without_reuse_port_the_port_stays_taken(
    tls: RotatingServerContext, servers: list[grpclib.server.Server]
) -> None:
    first = await listen(servers, tls, 0, reuse_port=False)
    port, option = port_and_option(first)
    assert option == 0
    with pytest.raises(OSError, match="in use"):
        await listen(servers, tls, port, reuse_port=False)
