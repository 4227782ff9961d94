"""The telemetry HTTP server over real loopback sockets: one GET answered and the connection
closed, and every other request answered with the status that says why, or dropped when it does
not come in time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus

import pytest

from pyspire.telemetry.http import MAX_HEAD_BYTES, HttpResponse, HttpServer, serve_http

SHORT = 0.2
WAIT = 5.0


class Recorder:
    """A handler that answers with the path it was asked for and keeps the headers."""

    def __init__(self) -> None:
        self.headers: list[Mapping[str, str]] = []

    async def __call__(self, path: str, headers: Mapping[str, str]) -> HttpResponse:
        self.headers.append(headers)
        if path == "/boom":
            raise RuntimeError("handler failed")
        return HttpResponse(HTTPStatus.OK, f"you asked for {path}".encode(), "text/plain")


@contextlib.asynccontextmanager
async def served(
    handler: Recorder, *, head_timeout: float = WAIT, max_connections: int = 64
) -> AsyncIterator[HttpServer]:
    server = await serve_http(
        handler,
        "127.0.0.1",
        0,
        name="test",
        head_timeout=head_timeout,
        max_connections=max_connections,
    )
    try:
        yield server
    finally:
        await server.close()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection (nothing when it resets it: closing
    with our request unread makes the kernel reset)."""
    async with asyncio.timeout(WAIT):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await read_all(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_a_get_is_answered_and_the_connection_closed() -> None:
    handler = Recorder()
    async with served(handler) as server:
        answer = await exchange(
            server.port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n"
        )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 200
    assert b"Content-Length: 22" in head
    assert b"Connection: close" in head
    assert body == b"you asked for /metrics"
    assert handler.headers == [{"host": "a", "accept": "text/plain"}]


async def test_head_gets_the_headers_only() -> None:
    async with served(Recorder()) as server:
        answer = await exchange(server.port, b"HEAD /live HTTP/1.1\r\n\r\n")
    assert status_of(answer) == 200
    assert answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /live HTTP/1.1\r\nContent-Length: 0\r\n\r\n", HTTPStatus.METHOD_NOT_ALLOWED),
        (b"GET /live\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET live HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET /live SPDY/3\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET /live HTTP/1.1\r\nno colon here\r\n\r\n", HTTPStatus.BAD_REQUEST),
        (b"GET /boom HTTP/1.1\r\n\r\n", HTTPStatus.INTERNAL_SERVER_ERROR),
    ],
)
async def test_other_requests_get_the_status_that_says_why(
    request_bytes: bytes, status: HTTPStatus
) -> None:
    async with served(Recorder()) as server:
        answer = await exchange(server.port, request_bytes)
    assert status_of(answer) == status.value


async def test_a_head_too_large_is_refused() -> None:
    padding = b"X-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    async with served(Recorder()) as server:
        answer = await exchange(server.port, b"GET /live HTTP/1.1\r\n" + padding + b"\r\n")
    assert status_of(answer) == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE.value


async def test_a_client_too_slow_to_send_its_head_is_dropped() -> None:
    handler = Recorder()
    async with served(handler, head_timeout=SHORT) as server:
        answer = await exchange(server.port, b"GET /live HTTP/1.1\r\nHost: a\r\n")
    assert answer == b""
    assert handler.headers == []


async def test_connections_over_the_bound_are_closed_at_once() -> None:
    async with served(Recorder(), max_connections=1) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"GET /live HTTP/1.1\r\n")  # holds the one place
            await writer.drain()
            assert await exchange(server.port, b"GET /live HTTP/1.1\r\n\r\n") == b""
            writer.write(b"\r\n")
            assert status_of(await read_all(reader)) == 200
        finally:
            writer.close()
        answer = await exchange(server.port, b"GET /live HTTP/1.1\r\n\r\n")
        assert status_of(answer) == 200


async def test_close_ends_connections_in_progress() -> None:
    server = await serve_http(Recorder(), "127.0.0.1", 0, name="test")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /live HTTP/1.1\r\n")
        await writer.drain()
        await server.close()
        assert await read_all(reader) == b""
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        await server.close()  # a second close is harmless
    finally:
        writer.close()
