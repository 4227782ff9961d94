"""A started call must receive its request message in time: a peer that sends nothing, part of
a message, or its bytes one by one gets DEADLINE_EXCEEDED when the bound passes, its stream is
reset, and the call is counted as ended; a request that arrived in time is never cut short."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpclib.protocol
import grpclib.server
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from prometheus_client.parser import text_string_to_metric_families

from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.server.runtime import ADMIN_API_LIMITS, SERVER_API_LIMITS, ServerRuntime
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire.transport.calls import InFlight, WithCallContext
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.messages import guard_request_frames
from pyspire.transport.tls import build_client_context

SHORT = 0.3
WAIT = 10.0
CHECK = "/grpc.health.v1.Health/Check"
MESSAGE = bytes(health.HealthCheckRequest(service="a-service-name"))


class Health(health.HealthBase):
    """Answers SERVING after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def check(
        self, health_check_request: health.HealthCheckRequest
    ) -> health.HealthCheckResponse:
        await asyncio.sleep(self.delay)
        return health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)


class Served:
    def __init__(self, path: Path, service: Health) -> None:
        self.path = path
        self.in_flight = InFlight()
        self.metrics = PrometheusMetrics("pyspire_test")
        self.server = grpclib.server.Server(
            [
                WithCallContext(
                    service, None, self.in_flight, request_timeout=SHORT, metrics=self.metrics
                )
            ]
        )

    def calls(self, status: str) -> float:
        body, _ = self.metrics.exposition()
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == "pyspire_test_rpc_health_check_total" and sample.labels == {
                    "status": status
                }:
                    return float(sample.value)
        return 0.0


@contextlib.asynccontextmanager
async def served(tmp_path: Path, service: Health | None = None) -> AsyncIterator[Served]:
    result = Served(tmp_path / "grpc.sock", service or Health())
    await result.server.start(path=str(result.path))
    try:
        yield result
    finally:
        result.server.close()
        await result.server.wait_closed()


async def dribble(path: Path, body: bytes, interval: float) -> tuple[dict[str, str], bool]:
    """Call Check sending ``body`` one byte every ``interval`` seconds, never ending the
    request; the trailers the server answered with, and whether it reset the stream."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    connection.initiate_connection()
    connection.send_headers(
        1,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", CHECK),
            (":authority", "localhost"),
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
        ],
    )
    writer.write(connection.data_to_send())
    answer: dict[str, str] = {}
    reset = False

    async def send() -> None:
        for index in range(len(body)):
            await asyncio.sleep(interval)
            connection.send_data(1, body[index : index + 1])
            writer.write(connection.data_to_send())
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(WAIT):
            while not reset:
                data = await reader.read(65536)
                if not data:
                    break
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        answer.update((str(k), str(v)) for k, v in event.headers)
                    elif isinstance(event, h2.events.StreamReset):
                        reset = True
                writer.write(connection.data_to_send())
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, h2.exceptions.ProtocolError):
            await sender
        writer.close()
    return answer, reset


@pytest.mark.parametrize(
    ("what", "body"),
    [
        ("nothing", b""),
        ("part of the prefix", b"\x00\x00"),
        ("part of the message", b"\x00" + len(MESSAGE).to_bytes(4, "big") + MESSAGE[:3]),
    ],
)
async def test_a_request_that_does_not_arrive_ends_with_deadline_exceeded(
    tmp_path: Path, raw_grpc: Any, what: str, body: bytes
) -> None:
    async with served(tmp_path) as server:
        reply = await raw_grpc.call(CHECK, body, path=str(server.path), end_stream=False)
        assert reply.status == Status.DEADLINE_EXCEEDED, what
        assert reply.message == f"the request message did not arrive within {SHORT:g}s"
        assert server.in_flight.count == 0
        assert server.calls("DEADLINE_EXCEEDED") == 1.0
        # The server goes on serving.
        channel = Channel(path=str(server.path))
        try:
            await health.HealthStub(channel).check(health.HealthCheckRequest())
        finally:
            channel.close()
        assert server.calls("OK") == 1.0


async def test_a_request_dribbled_byte_by_byte_is_cut_at_the_deadline(tmp_path: Path) -> None:
    body = b"\x00" + len(MESSAGE).to_bytes(4, "big") + MESSAGE
    # Every byte comes well within the bound, the whole message would take 2.5 times it.
    interval = SHORT * 2.5 / len(body)
    async with served(tmp_path) as server:
        answer, reset = await dribble(server.path, body, interval)
        assert answer.get("grpc-status") == str(Status.DEADLINE_EXCEEDED.value), answer
        assert reset, "the server did not reset the stream"
        assert server.in_flight.count == 0


async def test_a_call_whose_request_arrived_may_take_longer_than_the_bound(
    tmp_path: Path, raw_grpc: Any
) -> None:
    async with served(tmp_path, Health(delay=SHORT * 2)) as server:
        reply = await raw_grpc.call(CHECK, raw_grpc.frame(MESSAGE), path=str(server.path))
    assert reply.status == Status.OK


async def test_both_server_listeners_bound_the_wait(tmp_path: Path, raw_grpc: Any) -> None:
    document = {
        "server": {
            "trust_domain": "example.org",
            "data_dir": str(tmp_path / "data"),
            "bind_address": "127.0.0.1",
            "bind_port": 0,
            "socket_path": str(tmp_path / "admin" / "api.sock"),
            "plugins": {
                "datastore": {"sqlite": {}},
                "key_manager": {"disk": {}},
                "node_attestor": {"join_token": {}},
            },
        }
    }
    runtime = ServerRuntime(
        load_document(SERVER_SCHEMA, document),
        Discovery.load(),
        tcp_limits=_with_timeout(SERVER_API_LIMITS),
        admin_limits=_with_timeout(ADMIN_API_LIMITS),
    )
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(30):
            await runtime.ready.wait()
        assert runtime.listening is not None
        socket_path = str(runtime.listening.socket_path)
        get_bundle = "/spire.api.server.bundle.v1.Bundle/GetBundle"
        admin = await raw_grpc.call(get_bundle, b"\x00", path=socket_path, end_stream=False)
        assert admin.status == Status.DEADLINE_EXCEEDED
        channel = Channel(path=socket_path)
        try:
            bundle = await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
        finally:
            channel.close()
        tls = build_client_context([authority.asn1 for authority in bundle.x509_authorities])
        remote = await raw_grpc.call(
            get_bundle, b"\x00", port=runtime.listening.port, tls=tls, end_stream=False
        )
        assert remote.status == Status.DEADLINE_EXCEEDED
    finally:
        runtime.stop()
        await asyncio.wait_for(task, timeout=30)


def _with_timeout(limits: ConnectionLimits) -> ConnectionLimits:
    return dataclasses.replace(limits, request_timeout=SHORT)


async def test_a_request_already_ended_is_read_without_a_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every byte of an ended stream is in grpclib's buffer: the guard reads it without arming
    a timer (two per call otherwise, one per read)."""
    buffer = grpclib.protocol.Buffer(lambda size: None)
    buffer.add(b"\x00" + len(MESSAGE).to_bytes(4, "big") + MESSAGE, len(MESSAGE) + 5)
    buffer.eof()
    inner = SimpleNamespace(buffer=buffer, recv_data=buffer.read)
    stream: Any = SimpleNamespace(_stream=inner)
    guard_request_frames(stream, limit=1024, unary=True, first_message_timeout=WAIT)
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    prefix = await inner.recv_data(5)
    assert await inner.recv_data(int.from_bytes(prefix[1:], "big")) == MESSAGE
    assert timers == []


def test_the_request_guard_refuses_a_stream_it_does_not_recognise() -> None:
    stream: Any = SimpleNamespace(_stream=SimpleNamespace(recv_data=None))
    with pytest.raises(RuntimeError, match="the request guard needs updating"):
        guard_request_frames(stream, limit=1, unary=True, first_message_timeout=1.0)
