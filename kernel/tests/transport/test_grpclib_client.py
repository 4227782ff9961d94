"""The one place pyspire reads grpclib's client internals: whether a channel is connected."""

from __future__ import annotations

import grpclib.server
from grpclib.client import Channel
from grpclib.health.service import Health

from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.transport.grpclib_client import is_connected


async def test_a_channel_is_connected_from_its_first_call_until_closed() -> None:
    server = grpclib.server.Server([Health()])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    channel = Channel("127.0.0.1", port)
    try:
        assert not is_connected(channel)
        await health.HealthStub(channel).check(health.HealthCheckRequest())
        assert is_connected(channel)
        channel.close()
        assert not is_connected(channel)
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
