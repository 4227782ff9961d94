"""The seams into grpclib's server, each on its own: a grpclib upgrade that moves what they
rely on fails here first."""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpclib.const
import grpclib.protocol
import grpclib.server
import pytest
from grpclib.client import Channel

from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.proto.messages import EncodedMessage
from pyspire.transport.calls import WithCallContext
from pyspire.transport.grpclib_server import ProtocolFactory, start_on, watch_calls
from pyspire.transport.h2_lean import LeanH2Connection
from pyspire.transport.hpack_memo import MemoDecoder, MemoEncoder
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import serve_unix


class Health(health.HealthBase):
    async def check(
        self, health_check_request: health.HealthCheckRequest
    ) -> health.HealthCheckResponse:
        return health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)


@pytest.fixture
def socket_path() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ps-grpclib-", dir="/tmp"))
    yield folder / "api.sock"
    shutil.rmtree(folder, ignore_errors=True)


async def test_start_on_serves_watches_calls_and_closes_through_grpclib(socket_path: Path) -> None:
    events: list[str] = []

    def make(factory: ProtocolFactory) -> ProtocolFactory:
        def protocol() -> asyncio.Protocol:
            inner = factory()
            watch_calls(inner, lambda: events.append("started"), lambda: events.append("ended"))
            return inner

        return protocol

    async def listen(factory: ProtocolFactory) -> asyncio.Server:
        return await asyncio.get_running_loop().create_unix_server(make(factory), str(socket_path))

    server = grpclib.server.Server([WithCallContext(Health())])
    listener = await start_on(server, listen)
    with pytest.raises(RuntimeError, match="already started"):
        await start_on(server, listen)
    channel = Channel(path=str(socket_path))
    try:
        response = await health.HealthStub(channel).check(health.HealthCheckRequest())
        assert response.status == health.HealthCheckResponseServingStatus.SERVING
        await health.HealthStub(channel).check(health.HealthCheckRequest())
    finally:
        channel.close()
    assert events == ["started", "ended", "started", "ended"]
    server.close()
    await server.wait_closed()
    assert not listener.is_serving()


async def test_the_seams_refuse_what_they_do_not_recognise() -> None:
    async def listen(factory: ProtocolFactory) -> asyncio.Server:
        raise AssertionError("not reached")

    with pytest.raises(RuntimeError, match="start_on needs updating"):
        await start_on(object(), listen)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="watch_calls needs updating"):
        watch_calls(asyncio.Protocol(), lambda: None, lambda: None)


ECHO = "/pyspire.test.v1.Echo/Call"


class Echo:
    """Answers a request with its bytes, and its metadata as the trailing metadata."""

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            ECHO: grpclib.const.Handler(
                self.call, grpclib.const.Cardinality.UNARY_UNARY, EncodedMessage, EncodedMessage
            )
        }

    async def call(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        echoed = [(key, value) for key, value in stream.metadata.items() if key.startswith("x-")]
        await stream.send_message(EncodedMessage(request.data))
        await stream.send_trailing_metadata(metadata=echoed)


async def test_calls_through_the_lightened_connection_carry_their_headers(
    socket_path: Path,
) -> None:
    """Many calls on one connection, most repeating their headers (the memo's case), some
    adding fields or long ones that evict others: every header and trailer arrives as sent."""
    server = grpclib.server.Server([Echo()])
    listener = await serve_unix(
        server,
        socket_path,
        directory_mode=0o700,
        socket_mode=0o700,
        limits=ConnectionLimits(max_connections=4),
        name="test",
    )
    chooser = random.Random(7)
    values = ["a", "b", "c" * 300, "d" * 1200]
    channel = Channel(path=str(socket_path))
    try:
        for number in range(123):
            metadata = [
                (f"x-{chooser.randrange(4)}", chooser.choice(values))
                for _ in range(chooser.randrange(3) if number < 120 else 0)
            ]
            async with channel.request(
                ECHO,
                grpclib.const.Cardinality.UNARY_UNARY,
                EncodedMessage,
                EncodedMessage,
                metadata=metadata,
            ) as stream:
                await stream.send_message(EncodedMessage(b"call %d" % number), end=True)
                reply = await stream.recv_message()
                await stream.recv_trailing_metadata()
                assert reply is not None and reply.data == b"call %d" % number
                assert stream.trailing_metadata is not None
                trailers = stream.trailing_metadata.items()
                assert sorted((k, v) for k, v in trailers if k.startswith("x-")) == sorted(metadata)
        # The last calls repeat themselves: the connection answered them from its memo.
        (connection,) = listener.connections
        h2_connection = connection._inner.connection._connection  # type: ignore[attr-defined]
        assert isinstance(h2_connection, LeanH2Connection)
        assert isinstance(h2_connection.encoder, MemoEncoder) and h2_connection.encoder._memo
        assert isinstance(h2_connection.decoder, MemoDecoder) and h2_connection.decoder._memo
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


async def test_finished_calls_leave_no_stream_behind(socket_path: Path) -> None:
    """grpclib's handler keeps each call's task (and its stream: buffer, queue, events) until
    ten more calls have started; a watched connection lets each go as the call ends."""

    def make(factory: ProtocolFactory) -> ProtocolFactory:
        def protocol() -> asyncio.Protocol:
            inner = factory()
            watch_calls(inner, lambda: None, lambda: None)
            return inner

        return protocol

    async def listen(factory: ProtocolFactory) -> asyncio.Server:
        return await asyncio.get_running_loop().create_unix_server(make(factory), str(socket_path))

    def streams() -> int:
        return sum(isinstance(item, grpclib.protocol.Stream) for item in gc.get_objects())

    server = grpclib.server.Server([WithCallContext(Health())])
    await start_on(server, listen)
    channel = Channel(path=str(socket_path))
    try:
        before = streams()
        for _ in range(9):
            await health.HealthStub(channel).check(health.HealthCheckRequest())
        await asyncio.sleep(0.05)  # the last call's task done
        assert streams() == before
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
