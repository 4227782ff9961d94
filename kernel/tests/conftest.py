"""Fixtures shared by the kernel's tests: a gRPC client that sends raw request bytes.

A grpclib client frames and encodes every message itself, so it cannot send what a hostile or
broken peer sends. :class:`RawGrpc` speaks HTTP/2 directly (with ``h2``): the request body is
given byte for byte, gRPC prefix included, and the answer is the call's status and message. It
also knows every kind of malformed request body and what a server must do with one, so each
listener's test states only where to send them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import structlog
from grpclib.const import Status
from grpclib.metadata import decode_grpc_message


@dataclass(frozen=True)
class RawReply:
    """How a call ended: its gRPC status and status message."""

    status: Status
    message: str


class RawGrpc:
    """A gRPC client for requests no well-behaved client would send."""

    @staticmethod
    def frame(message: bytes, *, flag: int = 0, length: int | None = None) -> bytes:
        """``message`` behind a gRPC prefix: ``flag`` is the compressed flag, ``length``
        overrides the announced length."""
        announced = len(message) if length is None else length
        return bytes([flag]) + announced.to_bytes(4, "big") + message

    def malformed_bodies(self, message: bytes) -> dict[str, bytes]:
        """Every kind of broken request body, around ``message``: the encoding of a valid
        request of the method (a truncated copy of it must not decode)."""
        return {
            "random bytes": self.frame(random.Random(7).randbytes(64)),
            "truncated message": self.frame(message[:-3]),
            "stream ends inside the message": self.frame(message, length=len(message) + 40),
            "stream ends inside the prefix": b"\x00\x00\x00",
            "compressed flag": self.frame(message, flag=1),
            "unknown flag": self.frame(message, flag=7),
            "no message": b"",
        }

    async def expect_malformed(
        self,
        caplog: pytest.LogCaptureFixture,
        method: str,
        body: bytes,
        **where: Any,
    ) -> RawReply:
        """Send ``body`` and check the answer is INVALID_ARGUMENT "malformed request: <one
        line>", logged once as a structlog warning naming the method and the reason, with no
        error-level record and no traceback anywhere."""
        caplog.clear()
        with structlog.testing.capture_logs() as logs:
            reply = await self.call(method, body, **where)
        assert reply.status == Status.INVALID_ARGUMENT, (body, reply)
        assert reply.message.startswith("malformed request: "), reply.message
        assert "\n" not in reply.message
        errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert errors == [], [record.getMessage() for record in errors]
        assert not [record for record in caplog.records if record.exc_info]
        warnings = [event for event in logs if event["event"] == "malformed request"]
        assert len(warnings) == 1, logs
        assert warnings[0]["log_level"] == "warning"
        assert warnings[0]["method"] == method
        assert warnings[0]["reason"] == reply.message
        assert "exc_info" not in warnings[0]
        assert not [event for event in logs if event["log_level"] in ("error", "critical")]
        return reply

    @staticmethod
    async def call(
        method: str,
        body: bytes,
        *,
        path: str | None = None,
        port: int | None = None,
        tls: ssl.SSLContext | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        end_stream: bool = True,
    ) -> RawReply:
        """Call ``method`` on a unix socket (``path``) or on 127.0.0.1:``port`` (TLS with ``tls``),
        sending ``body`` as the whole request stream, then ending it (unless ``end_stream`` is
        false: then the request stays open, as a client still sending would leave it)."""
        if path is not None:
            reader, writer = await asyncio.open_unix_connection(path)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        try:
            connection = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
            )
            connection.initiate_connection()
            headers = [
                (":method", "POST"),
                (":scheme", "https" if tls is not None else "http"),
                (":path", method),
                (":authority", "localhost"),
                ("content-type", "application/grpc+proto"),
                ("te", "trailers"),
                *metadata,
            ]
            connection.send_headers(1, headers, end_stream=end_stream and not body)
            if body:
                connection.send_data(1, body, end_stream=end_stream)
            writer.write(connection.data_to_send())
            await writer.drain()
            answer: dict[str, str] = {}
            ended = False
            while not ended:
                data = await asyncio.wait_for(reader.read(65536), timeout=30)
                if not data:
                    break
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        answer.update((str(k), str(v)) for k, v in event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        connection.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        ended = True
                writer.write(connection.data_to_send())
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()
        assert "grpc-status" in answer, f"the call ended without a gRPC status: {answer}"
        return RawReply(
            Status(int(answer["grpc-status"])), decode_grpc_message(answer.get("grpc-message", ""))
        )


@pytest.fixture
def raw_grpc() -> RawGrpc:
    """:class:`RawGrpc`, for tests in any folder (test packages cannot import each other)."""
    return RawGrpc()


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    """A command run in-process (``pyspire-server run`` through ``main``) applies the server's
    collector policy to the test process; later tests in the same process get CPython's back,
    so none of them depends on what ran before it."""
    thresholds = gc.get_threshold()
    frozen = gc.get_freeze_count()
    yield
    gc.set_threshold(*thresholds)
    if gc.get_freeze_count() != frozen:
        gc.unfreeze()
