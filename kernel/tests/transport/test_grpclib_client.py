"""The places pyspire reaches into grpclib's client: the channel it opens (connected as the
server's connections are) and whether a channel is connected."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpclib.const
import grpclib.server
import pytest
from grpclib.client import Channel
from grpclib.health.service import Health

from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.proto.messages import EncodedMessage
from pyspire.transport.coalesce import CoalescingTransport
from pyspire.transport.grpclib_client import is_connected, open_channel
from pyspire.transport.h2_lean import LeanH2Connection
from pyspire.transport.hpack_memo import MemoDecoder, MemoEncoder

from .test_grpclib_server import ECHO, Echo


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A port where grpclib's own server (h2 and hpack as they come) answers Echo and Health."""
    server = grpclib.server.Server([Echo(), Health()])
    await server.start("127.0.0.1", 0)
    try:
        yield int(server._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    finally:
        server.close()
        await server.wait_closed()


async def echo(channel: Channel, body: bytes, metadata: list[tuple[str, str]]) -> None:
    async with channel.request(
        ECHO,
        grpclib.const.Cardinality.UNARY_UNARY,
        EncodedMessage,
        EncodedMessage,
        metadata=metadata,
    ) as stream:
        await stream.send_message(EncodedMessage(body), end=True)
        reply = await stream.recv_message()
        await stream.recv_trailing_metadata()
    assert reply is not None and reply.data == body
    assert stream.trailing_metadata is not None
    trailers = stream.trailing_metadata.items()
    assert sorted((k, v) for k, v in trailers if k.startswith("x-")) == sorted(metadata)


async def test_calls_on_an_opened_channel_carry_their_headers_through_a_lean_connection(
    port: int,
) -> None:
    """Many calls on one connection, most repeating their headers (the memo's case), some
    adding fields or long ones that evict others: every header and trailer arrives as sent,
    to and from a peer coding HTTP/2 with h2 and hpack as they come."""
    chooser = random.Random(11)
    values = ["a", "b", "c" * 300, "d" * 1200]
    channel = open_channel("127.0.0.1", port, ssl=None)
    try:
        for number in range(123):
            metadata = [
                (f"x-{chooser.randrange(4)}", chooser.choice(values))
                for _ in range(chooser.randrange(3) if number < 120 else 0)
            ]
            await echo(channel, b"call %d" % number, metadata)
        connection = channel._protocol.connection  # type: ignore[union-attr]
        assert isinstance(connection._transport, CoalescingTransport)
        h2_connection = connection._connection
        assert isinstance(h2_connection, LeanH2Connection)
        # The last calls repeat themselves: the connection answered them from its memo.
        assert isinstance(h2_connection.encoder, MemoEncoder) and h2_connection.encoder._memo
        assert isinstance(h2_connection.decoder, MemoDecoder) and h2_connection.decoder._memo
    finally:
        channel.close()


async def test_a_request_leaves_in_one_write(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """grpclib writes a call's request headers and its message each on its own: over TLS, a
    record and a ``send`` each. The opened channel's connection writes them together."""
    channel = open_channel("127.0.0.1", port, ssl=None)
    try:
        await echo(channel, b"first", [])
        transport = channel._protocol.connection._transport  # type: ignore[union-attr]
        socket_transport = getattr(transport, "inner", transport)
        writes: list[bytes] = []
        write: Callable[[Any], None] = socket_transport.write

        def recording(data: Any) -> None:
            writes.append(bytes(data))
            write(data)

        monkeypatch.setattr(socket_transport, "write", recording)
        await echo(channel, b"second", [("x-0", "a")])
        assert len(writes) == 1
        assert b"second" in writes[0]
    finally:
        channel.close()


@pytest.mark.parametrize("make", [Channel, open_channel], ids=["grpclib", "opened"])
async def test_a_channel_is_connected_from_its_first_call_until_closed(
    port: int, make: Callable[..., Channel]
) -> None:
    channel = make("127.0.0.1", port, ssl=None)
    try:
        assert not is_connected(channel)
        await health.HealthStub(channel).check(health.HealthCheckRequest())
        assert is_connected(channel)
        channel.close()
        assert not is_connected(channel)
    finally:
        channel.close()
