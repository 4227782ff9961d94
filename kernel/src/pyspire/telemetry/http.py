"""The HTTP server of the telemetry endpoints (Prometheus scrapes, health probes): aiohttp's
low-level server, on the process's event loop.

aiohttp parses the requests and writes the answers (HTTP/1.1 with keep-alive, ``HEAD`` without a
body). What this module adds is what the endpoints need and what a client may hold:

- only ``GET`` and ``HEAD`` are answered, 405 otherwise; the handler sees the path and headers
  (:data:`~pyspire.telemetry.handler.HttpHandler`), and a handler that raises is logged and
  answered 500;
- a request line or header longer than :data:`MAX_LINE_BYTES`, or more than
  :data:`MAX_HEADERS` headers, is answered 400 by aiohttp's parser (as is any malformed
  request; :mod:`pyspire.telemetry.logging` logs aiohttp's record of it at DEBUG only);
- a connection that has not sent a whole request head within ``head_timeout`` seconds of opening,
  or of its last answer, is closed (aiohttp's keep-alive timer, which runs from the start of a
  connection since aiohttp 3.14.4: SPIRE's health server bounds its ``ReadHeaderTimeout`` alike);
- a request whose client hangs up is cancelled (a probe that gave up leaves no check running);
- no request body is read, and one left unread closes the connection after the answer
  (``lingering_time=0``), so a body cannot hold a connection;
- at most ``max_connections`` connections are served at once, and more are closed when
  accepted: aiohttp has no such bound, so :class:`_BoundedServer` adds it;
- leaving :func:`serve_http` stops listening, closes idle connections and gives a request in
  progress :data:`SHUTDOWN_GRACE` seconds before cancelling it.

An answer at all proves the loop turns, which is what a liveness probe asks.
"""

from __future__ import annotations

__all__ = [
    "HEAD_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEADERS",
    "MAX_LINE_BYTES",
    "SHUTDOWN_GRACE",
    "HttpServer",
    "serve_http",
]

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import anyio
import structlog
from aiohttp import web

from pyspire.telemetry.handler import HttpHandler, HttpResponse

HEAD_TIMEOUT = 10.0
"""Seconds a connection may stay without a whole request head: from its start, and from each
answer on a kept-alive connection."""

MAX_LINE_BYTES = 8190
"""The longest request line, and the longest header (name or value), read."""

MAX_HEADERS = 32
"""The most headers a request may carry (scrapers and probes send a handful)."""

MAX_CONNECTIONS = 64
"""Connections served at once by one endpoint."""

SHUTDOWN_GRACE = 1.0
"""Seconds a request in progress has to be answered once its endpoint closes."""

_ALLOWED_METHODS = ("GET", "HEAD")

_log = structlog.get_logger("pyspire.telemetry.http")


@dataclass(frozen=True)
class HttpServer:
    """A listening endpoint: the setting it serves, and the TCP port it listens on (the one
    picked when it was asked for port 0)."""

    name: str
    port: int


class _BoundedServer(web.Server):
    """aiohttp's low-level server, closing the connections accepted beyond ``max_connections``.

    Every connection reports to its server through :meth:`connection_made` before it reads a
    byte; refusing there (closing the connection, and not counting it) is the whole bound.
    """

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._max_connections = max_connections

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        if len(self.connections) >= self._max_connections:
            handler.force_close()
            return
        super().connection_made(handler, transport)


def _answering(
    handler: HttpHandler, name: str
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """An aiohttp request handler answering ``GET`` and ``HEAD`` with ``handler``."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in _ALLOWED_METHODS:
            raise web.HTTPMethodNotAllowed(request.method, _ALLOWED_METHODS)
        try:
            response = await handler(request.path, request.headers)
        except Exception:
            _log.exception("telemetry endpoint failed to answer", endpoint=name, path=request.path)
            response = HttpResponse(HTTPStatus.INTERNAL_SERVER_ERROR)
        return web.Response(
            status=response.status,
            body=response.body,
            # Name the product, not the versions of Python and aiohttp it runs on.
            headers={"Content-Type": response.content_type, "Server": "pyspire"},
        )

    return answer


@contextlib.asynccontextmanager
async def serve_http(
    handler: HttpHandler,
    host: str,
    port: int,
    *,
    name: str,
    head_timeout: float = HEAD_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    shutdown_grace: float = SHUTDOWN_GRACE,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[HttpServer]:
    """Listen on ``host``:``port`` (0 picks a free port) and answer with ``handler`` until the
    block ends; then stop, as the module says, before returning. With ``ssl_context`` the
    endpoint speaks HTTPS.

    Raises :class:`OSError` when the address cannot be bound.
    """
    server = _BoundedServer(
        _answering(handler, name),
        max_connections=max_connections,
        handler_cancellation=True,
        keepalive_timeout=head_timeout,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_LINE_BYTES,
        max_headers=MAX_HEADERS,
        lingering_time=0,
        access_log=None,
    )
    runner = web.ServerRunner(server, shutdown_timeout=shutdown_grace)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        _log.info("serving http", endpoint=name, host=host, port=site.port)
        yield HttpServer(name=name, port=site.port)
    finally:
        # Bounded by the grace, and finished even when the owner is being cancelled, so no
        # socket outlives the block.
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
