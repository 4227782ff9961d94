"""A small HTTP/1.1 server for the telemetry endpoints (Prometheus scrapes, health probes).

Those clients send one ``GET`` and read one answer, so this server does only that: it reads the
request head (at most :data:`MAX_HEAD_BYTES`, within ``head_timeout`` seconds, as SPIRE's
health server bounds its ``ReadHeaderTimeout``), hands the path and headers to the handler,
writes the answer with ``Connection: close`` and closes. Anything else is answered with the
status that says why (400, 405, 431) or, for a peer too slow to send its head, by closing. At
most ``max_connections`` connections are served at once; more are closed when accepted. No
request body is read, so none can hold the connection.

It runs on the process's event loop: an answer at all proves the loop turns, which is what a
liveness probe asks.
"""

from __future__ import annotations

__all__ = [
    "HEAD_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "HttpHandler",
    "HttpResponse",
    "HttpServer",
    "serve_http",
]

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

import structlog

HEAD_TIMEOUT = 10.0
"""Seconds a client has to send its request line and headers."""

MAX_HEAD_BYTES = 8192
"""The longest request head (request line and headers) read."""

MAX_CONNECTIONS = 64
"""Connections served at once by one endpoint."""

_log = structlog.get_logger("pyspire.telemetry.http")


@dataclass(frozen=True)
class HttpResponse:
    """What a handler answers."""

    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


HttpHandler = Callable[[str, Mapping[str, str]], Awaitable[HttpResponse]]
"""Answers a ``GET`` of a path (without its query string), given the headers (lower-case
names)."""


class _BadRequestError(Exception):
    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """The method, path and headers of a request head; _BadRequestError when it is not HTTP/1.x."""
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequestError(HTTPStatus.BAD_REQUEST)
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequestError(HTTPStatus.BAD_REQUEST)
        headers[name.lower()] = value.strip()
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        raise _BadRequestError(HTTPStatus.BAD_REQUEST)
    return method, path, headers


def _encode(response: HttpResponse, *, with_body: bool) -> bytes:
    head = (
        f"HTTP/1.1 {response.status.value} {response.status.phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head + response.body if with_body else head


class HttpServer:
    """A listening endpoint; :meth:`close` stops it and ends the connections it serves.

    ``port`` is the TCP port it listens on (the one picked when it was asked for port 0).
    """

    def __init__(
        self, handler: HttpHandler, *, name: str, head_timeout: float, max_connections: int
    ) -> None:
        self._handler = handler
        self.name = name
        self._head_timeout = head_timeout
        self._max_connections = max_connections
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _listen(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=MAX_HEAD_BYTES, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._max_connections:
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._head_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return
        except asyncio.LimitOverrunError:
            await self._answer(
                writer, HttpResponse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE), with_body=True
            )
            return
        try:
            method, path, headers = _parse_head(head[:-4])
        except _BadRequestError as error:
            await self._answer(writer, HttpResponse(error.status), with_body=True)
            return
        if method not in ("GET", "HEAD"):
            await self._answer(writer, HttpResponse(HTTPStatus.METHOD_NOT_ALLOWED), with_body=True)
            return
        try:
            response = await self._handler(path, headers)
        except Exception:
            _log.exception("telemetry endpoint failed to answer", endpoint=self.name, path=path)
            response = HttpResponse(HTTPStatus.INTERNAL_SERVER_ERROR)
        await self._answer(writer, response, with_body=method == "GET")

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter, response: HttpResponse, *, with_body: bool
    ) -> None:
        writer.write(_encode(response, with_body=with_body))
        await writer.drain()

    async def close(self) -> None:
        """Stop listening and end the connections in progress; safe to call more than once."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()


async def serve_http(
    handler: HttpHandler,
    host: str,
    port: int,
    *,
    name: str,
    head_timeout: float = HEAD_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> HttpServer:
    """Listen on ``host``:``port`` (0 picks a free port) and answer with ``handler``.

    Raises :class:`OSError` when the address cannot be bound.
    """
    server = HttpServer(
        handler, name=name, head_timeout=head_timeout, max_connections=max_connections
    )
    await server._listen(host, port)
    _log.info("serving http", endpoint=name, host=host, port=server.port)
    return server
