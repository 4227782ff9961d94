"""The telemetry HTTP server over real loopback sockets: GET and HEAD answered to a real HTTP
client (http.client), every other request answered with the status that says why, and what a
client may hold bounded: the head's size, the time to send it, a body, the connections."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus

import anyio
import pytest

from pyspire.telemetry.handler import HttpResponse
from pyspire.telemetry.http import (
    MAX_CONNECTIONS,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    SHUTDOWN_GRACE,
    HttpServer,
    serve_http,
)

from .servers import refused

SHORT = 0.2
WAIT = 5.0


class Recorder:
    """A handler that answers with the path it was asked for and keeps the headers; ``/stuck``
    never answers and ``/boom`` fails."""

    def __init__(self) -> None:
        self.headers: list[Mapping[str, str]] = []
        self.stuck = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, path: str, headers: Mapping[str, str]) -> HttpResponse:
        self.headers.append(dict(headers))
        if path == "/boom":
            raise RuntimeError("handler failed")
        if path == "/stuck":
            self.stuck.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return HttpResponse(HTTPStatus.OK, f"you asked for {path}".encode(), "text/plain")


@contextlib.asynccontextmanager
async def served(
    handler: Recorder,
    *,
    head_timeout: float = WAIT,
    max_connections: int = MAX_CONNECTIONS,
    shutdown_grace: float = SHUTDOWN_GRACE,
) -> AsyncIterator[HttpServer]:
    async with serve_http(
        handler,
        "127.0.0.1",
        0,
        name="test",
        head_timeout=head_timeout,
        max_connections=max_connections,
        shutdown_grace=shutdown_grace,
    ) as server:
        yield server


def _request(
    port: int, method: str, path: str, headers: Mapping[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.request(method, path, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


async def request(
    port: int, method: str, path: str, headers: Mapping[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request from a real HTTP client (in a thread, as an outside client): status,
    headers and body."""
    return await asyncio.to_thread(_request, port, method, path, headers)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection (nothing when it resets it: closing
    with our request unread makes the kernel reset)."""
    async with asyncio.timeout(WAIT):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def exchange(port: int, request_bytes: bytes) -> bytes:
    """Send raw ``request_bytes`` and read until the server closes the connection."""
    async with connection(port) as (reader, writer):
        writer.write(request_bytes)
        await writer.drain()
        return await read_all(reader)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_a_get_is_answered_with_the_handlers_answer() -> None:
    handler = Recorder()
    async with served(handler) as server:
        status, headers, body = await request(
            server.port, "GET", "/metrics?x=1", {"Accept": "text/plain"}
        )
    assert (status, body) == (200, b"you asked for /metrics")
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Length"] == "22"
    assert headers["Server"] == "pyspire"  # no Python or aiohttp version given away
    [seen] = handler.headers
    assert seen["Accept"] == "text/plain"


async def test_the_handler_finds_headers_by_name_in_any_case() -> None:
    seen: list[str] = []

    async def accept(path: str, headers: Mapping[str, str]) -> HttpResponse:
        seen.append(headers.get("accept", "missing"))
        return HttpResponse(HTTPStatus.OK)

    async with serve_http(accept, "127.0.0.1", 0, name="test") as server:
        await request(server.port, "GET", "/", {"ACCEPT": "application/openmetrics-text"})
    assert seen == ["application/openmetrics-text"]


async def test_a_connection_is_kept_alive_across_requests() -> None:
    async with served(Recorder()) as server:
        client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)

        def twice() -> list[bytes]:
            bodies = []
            for path in ("/a", "/b"):
                client.request("GET", path)
                bodies.append(client.getresponse().read())
            return bodies

        try:
            assert await asyncio.to_thread(twice) == [b"you asked for /a", b"you asked for /b"]
        finally:
            client.close()


async def test_head_gets_the_headers_only() -> None:
    async with served(Recorder()) as server:
        status, headers, body = await request(server.port, "HEAD", "/live")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == "text/plain"


async def test_other_methods_are_not_allowed() -> None:
    handler = Recorder()
    async with served(handler) as server:
        status, headers, _ = await request(server.port, "POST", "/live")
    assert status == HTTPStatus.METHOD_NOT_ALLOWED
    assert headers["Allow"] == "GET,HEAD"
    assert handler.headers == []


async def test_a_failing_handler_is_answered_500() -> None:
    async with served(Recorder()) as server:
        status, _, _ = await request(server.port, "GET", "/boom")
        assert status == HTTPStatus.INTERNAL_SERVER_ERROR
        assert (await request(server.port, "GET", "/live"))[0] == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET live HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /live SPDY/3\r\nHost: a\r\n\r\n",
        b"GET /live HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
        b"GET /live HTTP/1.1\r\n\r\n",  # HTTP/1.1 requires Host
    ],
)
async def test_malformed_requests_are_bad_requests(request_bytes: bytes) -> None:
    handler = Recorder()
    async with served(handler) as server:
        answer = await exchange(server.port, request_bytes)
    assert status_of(answer) == HTTPStatus.BAD_REQUEST
    assert handler.headers == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * MAX_LINE_BYTES + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /live HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * (MAX_LINE_BYTES + 1) + b"\r\n\r\n",
        b"GET /live HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-Pad-%d: a\r\n" % number for number in range(MAX_HEADERS))
        + b"\r\n",
    ],
    ids=["request line", "header", "header count"],
)
async def test_a_head_too_large_is_refused(request_bytes: bytes) -> None:
    handler = Recorder()
    async with served(handler) as server:
        answer = await exchange(server.port, request_bytes)
    assert status_of(answer) == HTTPStatus.BAD_REQUEST
    assert handler.headers == []


async def test_a_head_at_the_bounds_is_answered() -> None:
    path = "/" + "a" * (MAX_LINE_BYTES - len("GET / HTTP/1.1"))
    # http.client adds Host and Accept-Encoding.
    headers = {f"X-Pad-{number}": "a" for number in range(MAX_HEADERS - 3)}
    headers["X-Long"] = "a" * MAX_LINE_BYTES
    async with served(Recorder()) as server:
        status, _, body = await request(server.port, "GET", path, headers)
    assert status == 200
    assert body == f"you asked for {path}".encode()


async def test_a_client_too_slow_to_send_its_head_is_dropped() -> None:
    handler = Recorder()
    async with served(handler, head_timeout=SHORT) as server:
        answer = await exchange(server.port, b"GET /live HTTP/1.1\r\nHost: a\r\n")
    assert answer == b""
    assert handler.headers == []


async def test_a_kept_alive_connection_is_dropped_when_the_next_head_is_late() -> None:
    handler = Recorder()
    async with (
        served(handler, head_timeout=SHORT) as server,
        connection(server.port) as (reader, writer),
    ):
        writer.write(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(WAIT):
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(b"you asked for /first"))
        assert status_of(head) == 200
        writer.write(b"GET /second HTTP/1.1\r\n")
        await writer.drain()
        assert await read_all(reader) == b""
    assert len(handler.headers) == 1


async def test_a_body_cannot_hold_the_connection() -> None:
    async with served(Recorder()) as server:
        answer = await exchange(
            server.port, b"GET /live HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc"
        )
    assert status_of(answer) == 200
    assert answer.endswith(b"you asked for /live")


async def test_connections_over_the_bound_are_closed_at_once() -> None:
    async with (
        served(Recorder(), max_connections=1) as server,
        connection(server.port) as (reader, writer),
    ):
        writer.write(b"GET /live HTTP/1.1\r\n")  # holds the one place
        await writer.drain()
        assert await exchange(server.port, b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n") == b""
        writer.write(b"Host: a\r\nConnection: close\r\n\r\n")
        assert status_of(await read_all(reader)) == 200
        # The place is free again.
        assert (await request(server.port, "GET", "/live"))[0] == 200


async def test_leaving_ends_connections_in_progress_and_stops_listening() -> None:
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(served(Recorder()))
        reader, writer = await stack.enter_async_context(connection(server.port))
        writer.write(b"GET /live HTTP/1.1\r\n")
        await writer.drain()
        async with asyncio.timeout(WAIT):
            await stack.aclose()
        assert await read_all(reader) == b""
        assert await refused(server.port)


async def test_a_request_in_progress_is_cancelled_after_the_grace() -> None:
    handler = Recorder()
    async with contextlib.AsyncExitStack() as endpoint:
        server = await endpoint.enter_async_context(served(handler, shutdown_grace=SHORT))
        async with connection(server.port) as (reader, writer):
            writer.write(b"GET /stuck HTTP/1.1\r\nHost: a\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(WAIT):
                await handler.stuck.wait()
                await endpoint.aclose()
            assert handler.cancelled.is_set()
            assert await read_all(reader) == b""


async def test_a_request_is_cancelled_when_its_client_hangs_up() -> None:
    handler = Recorder()
    async with served(handler) as server:
        async with connection(server.port) as (_, writer):
            writer.write(b"GET /stuck HTTP/1.1\r\nHost: a\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(WAIT):
                await handler.stuck.wait()
        async with asyncio.timeout(WAIT):
            await handler.cancelled.wait()


async def test_a_cancelled_owner_still_closes_everything() -> None:
    """Cancelled by an anyio scope, which cancels every await until it is left, the endpoint
    still closes its connections and stops listening before it is gone."""
    started: asyncio.Queue[HttpServer] = asyncio.Queue()

    async def serve_forever() -> None:
        async with served(Recorder()) as server:
            await started.put(server)
            await asyncio.Event().wait()

    async with contextlib.AsyncExitStack() as client:
        async with anyio.create_task_group() as group:
            group.start_soon(serve_forever)
            server = await started.get()
            reader, writer = await client.enter_async_context(connection(server.port))
            writer.write(b"GET /live HTTP/1.1\r\n")
            await writer.drain()
            group.cancel_scope.cancel()
        assert await read_all(reader) == b""
        assert await refused(server.port)
