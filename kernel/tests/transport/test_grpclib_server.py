"""The two seams into grpclib's server, each on its own: a grpclib upgrade that moves what they
rely on fails here first."""

from __future__ import annotations

import asyncio
import gc
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpclib.protocol
import grpclib.server
import pytest
from grpclib.client import Channel

from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.transport.calls import WithCallContext
from pyspire.transport.grpclib_server import ProtocolFactory, start_on, watch_calls


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
