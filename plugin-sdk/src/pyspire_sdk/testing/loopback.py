"""Real HTTP(S) servers on 127.0.0.1 that stand in for metadata services and cloud APIs.

A plugin that calls an HTTP API is tested against a server answering with the API's published
shapes, over a real socket, rather than a mock of its client::

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "..."})

    routes = [("GET", "/token", token)]
    async with serve_loopback(routes, tls=TestAuthority(td), directory=d) as srv:
        client = HttpClient(ca_file=srv.ca_file)
        await client.get(srv.url + "/token")

With ``tls``, the server presents a certificate for ``localhost`` and ``127.0.0.1`` signed by
that :class:`~pyspire_sdk.testing.pki.TestAuthority`, whose certificate is written to
``ca_file`` for clients to trust (``tls_hosts`` names other hosts, such as a node name the
client does not connect by); with ``client_ca`` as well, it accepts only clients presenting a
certificate that authority signed. Every request is recorded (method, path, query, headers) so a
test can check what the plugin sent. :class:`LoopbackThread` runs the same server on an event
loop of its own, for synchronous tests that start real processes.
"""

from __future__ import annotations

__all__ = ["Handler", "LoopbackServer", "LoopbackThread", "RecordedRequest", "serve_loopback"]

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiohttp import web

from pyspire_sdk.testing.pki import TestAuthority

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An aiohttp request handler."""


@dataclass(frozen=True)
class RecordedRequest:
    """What a client sent: method, path, query parameters, headers (names lower-case)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]


@dataclass
class LoopbackServer:
    """A running server: its base URL (no trailing slash), the CA file its certificate chains
    to (``None`` for plain HTTP) and the requests it received, oldest first."""

    url: str
    ca_file: Path | None
    requests: list[RecordedRequest] = field(default_factory=list)

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return self.url.split("://", 1)[1]


def _tls_context(
    authority: TestAuthority,
    directory: Path,
    hosts: Sequence[str],
    client_ca: TestAuthority | None,
) -> tuple[ssl.SSLContext, Path]:
    certificate, key = authority.issue_tls_server(hosts)
    directory.mkdir(parents=True, exist_ok=True)
    certificate_file = directory / "loopback-server.pem"
    key_file = directory / "loopback-server.key"
    ca_file = directory / "loopback-ca.pem"
    certificate_file.write_bytes(certificate)
    key_file.touch(mode=0o600)
    key_file.write_bytes(key)
    ca_file.write_bytes(authority.pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate_file, key_file)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.pem.decode())
    return context, ca_file


@contextlib.asynccontextmanager
async def serve_loopback(
    routes: Iterable[tuple[str, str, Handler]],
    *,
    tls: TestAuthority | None = None,
    directory: Path | None = None,
    tls_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    client_ca: TestAuthority | None = None,
) -> AsyncIterator[LoopbackServer]:
    """Serve ``routes`` (method, aiohttp path pattern, handler) on an ephemeral port of
    127.0.0.1 until the block ends. ``directory`` receives the TLS files (required with
    ``tls``); the certificate names ``tls_hosts``; ``client_ca`` requires client
    certificates it signed."""
    server = LoopbackServer(url="", ca_file=None)

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        server.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={name.lower(): value for name, value in request.headers.items()},
            )
        )
        return await handler(request)

    application = web.Application(middlewares=[record])
    for method, path, handler in routes:
        application.router.add_route(method, path, handler)
    context: ssl.SSLContext | None = None
    if tls is not None:
        if directory is None:
            raise ValueError("serve_loopback needs a directory for the TLS files")
        context, server.ca_file = _tls_context(tls, directory, tls_hosts, client_ca)
    # Requests still running when the block ends (a test of timeouts leaves one) are
    # cancelled at once rather than awaited.
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"{'https' if context else 'http'}://127.0.0.1:{port}"
        yield server
    finally:
        await runner.cleanup()


class LoopbackThread:
    """:func:`serve_loopback` on a thread with its own event loop, for synchronous code::

    with LoopbackThread(routes, tls=authority, directory=d) as server:
        ...  # start processes that call server.url
    """

    def __init__(
        self,
        routes: Iterable[tuple[str, str, Handler]],
        *,
        tls: TestAuthority | None = None,
        directory: Path | None = None,
        tls_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        client_ca: TestAuthority | None = None,
    ) -> None:
        self._routes = list(routes)
        self._tls = tls
        self._directory = directory
        self._tls_hosts = tuple(tls_hosts)
        self._client_ca = client_ca
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: LoopbackServer | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="loopback-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to the starting thread
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve_loopback(
            self._routes,
            tls=self._tls,
            directory=self._directory,
            tls_hosts=self._tls_hosts,
            client_ca=self._client_ca,
        ) as server:
            self._server = server
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the loopback server did not start within 30s")
        if self._error is not None or self._server is None:
            raise RuntimeError(f"the loopback server did not start: {self._error!r}")
        return self._server

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
