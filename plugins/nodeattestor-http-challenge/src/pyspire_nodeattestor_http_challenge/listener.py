"""The agent's challenge listener: a small HTTP server, open for one attestation, that answers
the server's fetch of the challenge (aiohttp's low-level server on the agent's event loop).

It listens on every address of the host (one dual-stack socket where the host has IPv6, so
``port = 0`` picks one port for both families), as SPIRE's agent does. It answers ``GET`` and
``HEAD`` of the challenge's path with the nonce and a newline once the challenge has arrived,
404 before that and for any other path, and 405 to other methods; it reads no body, keeps at
most :data:`MAX_CONNECTIONS` connections and closes idle ones after :data:`IDLE_TIMEOUT`
seconds. Leaving :func:`serve_challenge` closes the socket and every connection, also when the
owner is cancelled.
"""

from __future__ import annotations

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "ChallengeListener", "serve_challenge"]

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from pyspire_nodeattestor_http_challenge.protocol import challenge_path
from pyspire_sdk.errors import UnavailableError

IDLE_TIMEOUT = 10.0
MAX_CONNECTIONS = 16
_SHUTDOWN_GRACE = 1.0
_METHODS = ("GET", "HEAD")


class ChallengeListener:
    """What one attestation's listener serves; :meth:`serve` sets the nonce."""

    def __init__(self, agentname: str) -> None:
        self._path = challenge_path(agentname)
        self._nonce: str | None = None
        self.port = 0

    def serve(self, nonce: str) -> None:
        """Answer the challenge's path with ``nonce`` from now on."""
        self._nonce = nonce

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in _METHODS:
            raise web.HTTPMethodNotAllowed(request.method, _METHODS)
        if request.path != self._path or self._nonce is None:
            return web.Response(status=404, headers={"Server": "pyspire"})
        return web.Response(
            text=self._nonce + "\n", content_type="text/plain", headers={"Server": "pyspire"}
        )


class _BoundedServer(web.Server):
    """aiohttp's low-level server, closing connections accepted beyond ``max_connections``."""

    def __init__(self, listener: ChallengeListener, **kwargs: Any) -> None:
        super().__init__(listener.answer, **kwargs)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:
            handler.force_close()
            return
        super().connection_made(handler, transport)


def _bind(port: int) -> socket.socket:
    """A listening TCP socket on every address, dual-stack when the host has IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address: tuple[str, int] = ("::", port)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("0.0.0.0", port)  # noqa: S104 - the server calls the host by its name
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(MAX_CONNECTIONS)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serve_challenge(port: int, agentname: str) -> AsyncIterator[ChallengeListener]:
    """Listen on ``port`` (0 picks one) for the block's length; the listener's ``port`` is the
    one listened on. UnavailableError when the port cannot be had."""
    listener = ChallengeListener(agentname)
    try:
        sock = _bind(port)
    except OSError as error:
        raise UnavailableError(
            f"http_challenge: cannot listen on port {port}: {error.strerror or error}"
        ) from None
    server = _BoundedServer(
        listener,
        handler_cancellation=True,
        keepalive_timeout=IDLE_TIMEOUT,
        lingering_time=0,
        access_log=None,
    )
    runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_GRACE)
    started = False
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        started = True
        listener.port = sock.getsockname()[1]
        yield listener
    finally:
        if not started:
            sock.close()  # a started site closes its socket itself
        # Finished even when the owner is being cancelled, so no connection outlives the block.
        cleanup = asyncio.ensure_future(runner.cleanup())
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            await cleanup
            raise
