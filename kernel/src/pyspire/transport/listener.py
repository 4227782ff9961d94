"""Listeners whose connections stay bounded in number and in time.

Every accepted connection first takes a place in the listener's :class:`ConnectionCounts`; one
over a limit is closed at once, before any TLS work. A TLS connection then has
``handshake_timeout`` seconds to finish its handshake (a verified client certificate frees its
place in the per-address count); every connection has ``first_request_timeout`` seconds to start
a call, and is closed after ``idle_timeout`` seconds without a call in progress; the kernel
probes every TCP peer (:func:`keep_alive`), so one that vanished is let go even with a call in
progress. Closing the listener closes every connection it accepted. The gRPC side is grpclib's,
unchanged: each connection wraps the protocol grpclib would have used (see
:mod:`.grpclib_server`), connected through :func:`~.grpclib_protocol.connect_lean`: it writes
through a :class:`~.coalesce.CoalescingTransport` (what one turn of the loop writes leaves in
one write) and codes HTTP/2 through :mod:`.h2_lean`.
"""

from __future__ import annotations

__all__ = ["GuardedListener", "serve_tcp", "serve_unix"]

import asyncio
import asyncio.selector_events
import asyncio.sslproto
import contextlib
import socket
import ssl
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import grpclib.server
import structlog
from structlog.typing import FilteringBoundLogger

from pyspire.transport.grpclib_protocol import connect_lean
from pyspire.transport.grpclib_server import ProtocolFactory, start_on, watch_calls
from pyspire.transport.limits import Admitted, ConnectionCounts, ConnectionLimits, Refused
from pyspire.transport.peer import transport_certificate
from pyspire.transport.unix import bind_unix_socket

BACKLOG = 128
"""Connections the kernel queues before the listener accepts them."""

REFUSAL_LOG_INTERVAL = 60.0
"""Seconds between two warnings about refused connections (each says how many there were)."""

TLS_READ_BUFFER_BYTES = 16 * 1024
"""The buffer TLS connections read their sockets through: one TLS record's payload."""

TCP_KEEPALIVE_SECONDS = 15
"""Idle seconds before the kernel probes a TCP peer, and seconds between probes (Go's
default for accepted connections, so SPIRE's): a peer that vanished without closing (a node
powered off) is found dead after about :data:`TCP_KEEPALIVE_PROBES` probes, and its connection
closed, even while a call of it is in progress."""

TCP_KEEPALIVE_PROBES = 9
"""Unanswered probes before the kernel gives a TCP connection up."""


def keep_alive(transport: asyncio.BaseTransport) -> None:
    """Have the kernel probe the TCP peer of ``transport`` (no-op for a unix socket)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPALIVE_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, TCP_KEEPALIVE_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPALIVE_PROBES)


_read_buffers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, memoryview] = (
    weakref.WeakKeyDictionary()
)


def shared_read_buffer(loop: asyncio.AbstractEventLoop) -> memoryview:
    """The one :data:`TLS_READ_BUFFER_BYTES` buffer every TLS connection of ``loop`` reads
    its socket through.

    Sharing is safe on a selector event loop: it asks a connection for a buffer, receives into
    it and hands the bytes to the connection (which copies them into OpenSSL) in one
    synchronous step, so no two connections ever hold it at once. Any other loop gets a buffer
    of its own for each connection.
    """
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        return memoryview(bytearray(TLS_READ_BUFFER_BYTES))
    view = _read_buffers.get(loop)
    if view is None:
        view = _read_buffers[loop] = memoryview(bytearray(TLS_READ_BUFFER_BYTES))
    return view


def lean_tls_read_buffer(raw: asyncio.Transport) -> None:
    """Have the TLS layer that just took ``raw`` over read through :func:`shared_read_buffer`.

    asyncio's TLS layer reads through a 256 KiB buffer it allocates and zero-fills per
    connection, for the connection's life: most of the ~300 KiB an idle TLS connection costs.
    A TLS record carries at most 16 KiB, so a smaller buffer only means more reads for a large
    message, and the buffer holds bytes only until they are copied into OpenSSL, so one buffer
    serves every connection. Scheduled with ``call_soon`` just before ``loop.start_tls``, this
    runs once the TLS layer is the transport's protocol and before it reads. The one use of
    asyncio's private attributes: an upgrade that changes them fails this function's test.
    Another event loop's TLS layer (uvloop's) keeps its own buffers: it is left as it is.
    """
    if not isinstance(asyncio.get_running_loop(), asyncio.selector_events.BaseSelectorEventLoop):
        return
    protocol = raw.get_protocol()
    if not isinstance(protocol, asyncio.sslproto.SSLProtocol) or not hasattr(
        protocol, "_ssl_buffer"
    ):
        raise RuntimeError("asyncio's TLS layer changed: lean_tls_read_buffer needs updating")
    view = shared_read_buffer(asyncio.get_running_loop())
    layer: Any = protocol
    layer.max_size = TLS_READ_BUFFER_BYTES
    layer._ssl_buffer = view.obj
    layer._ssl_buffer_view = view


def drop_read_callback(raw: asyncio.BaseTransport) -> None:
    """Let go of the read callback asyncio's socket transport ``raw`` keeps of itself, once the
    transport no longer reads (closed or aborted: asyncio removed it from the selector).

    That callback is a bound method of the transport kept in the transport: a cycle that only
    the cyclic collector frees, holding the transport (its buffers, its extra information)
    until a collection walks it, and for ever when the heap was frozen while the connection
    was open (:mod:`pyspire.collector`). The one other use of asyncio's private attributes,
    beside :func:`lean_tls_read_buffer`; another loop's transport (uvloop's) is left alone.
    """
    if not isinstance(asyncio.get_running_loop(), asyncio.selector_events.BaseSelectorEventLoop):
        return
    if raw.is_closing() and hasattr(raw, "_read_ready_cb"):
        transport: Any = raw
        transport._read_ready_cb = None


class GuardedListener:
    """An asyncio server whose connections obey :class:`ConnectionLimits`; grpclib owns it
    (its ``close`` and ``wait_closed`` close this too)."""

    def __init__(
        self,
        make_protocol: ProtocolFactory,
        limits: ConnectionLimits,
        *,
        tls: ssl.SSLContext | None,
        name: str,
        logger: FilteringBoundLogger | None = None,
        on_unverified_peer: Callable[[], None] | None = None,
    ) -> None:
        self.counts = ConnectionCounts(limits)
        self.on_unverified_peer = on_unverified_peer
        """Told when a peer's certificate failed verification against the trust anchors (a
        server sharing its datastore with others may not have read a CA another one added)."""
        self.limits = limits
        self.tls = tls
        self._make_protocol = make_protocol
        self._server: asyncio.Server | None = None
        self.connections: set[_GuardedConnection] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._closing = False
        self._log = (logger or structlog.get_logger("pyspire.transport")).bind(listener=name)
        self._refused = 0
        self._refusal_logged_at: float | None = None

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called: a connection whose protocol starts now is closed."""
        return self._closing

    @property
    def sockets(self) -> Sequence[Any]:
        return self._server.sockets if self._server is not None else ()

    def protocol(self) -> asyncio.Protocol:
        """A protocol for one accepted connection (the asyncio server's factory)."""
        return _GuardedConnection(self, self._make_protocol())

    def listen_on(self, server: asyncio.Server) -> GuardedListener:
        """Take ownership of the asyncio server whose factory is :meth:`protocol`."""
        self._server = server
        return self

    def close(self) -> None:
        """Stop accepting, end handshakes in progress and close every connection (one accepted
        just before, whose protocol starts only now, is closed as it starts, before any
        handshake task)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in self._handshakes:
            task.cancel()
        for connection in list(self.connections):
            connection.abort()

    async def wait_closed(self) -> None:
        """Return once every handshake task has ended and the server has closed."""
        while self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def note_refused(self, refused: Refused, address: str) -> None:
        """Count a refusal; warn at most every :data:`REFUSAL_LOG_INTERVAL` seconds."""
        self._refused += 1
        now = asyncio.get_running_loop().time()
        logged = self._refusal_logged_at
        if logged is None or now - logged >= REFUSAL_LOG_INTERVAL:
            self._log.warning(
                "connections refused",
                reason=refused.reason,
                address=address,
                refused=self._refused,
            )
            self._refused = 0
            self._refusal_logged_at = now

    def start_handshake(
        self, connection: _GuardedConnection, raw: asyncio.Transport, tls: ssl.SSLContext
    ) -> None:
        """Run the connection's TLS handshake in a task this listener owns: :meth:`close`
        cancels it and :meth:`wait_closed` waits for it."""
        task = asyncio.get_running_loop().create_task(connection.handshake(raw, tls))
        self._handshakes.add(task)
        task.add_done_callback(self._handshake_ended)

    def _handshake_ended(self, task: asyncio.Task[None]) -> None:
        self._handshakes.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._log.error("tls handshake task failed", exc_info=error)


def _address_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ""


class _GuardedConnection(asyncio.Protocol):
    """One accepted connection: holds its place in the counts, runs the TLS handshake with a
    timeout, then hands the connection to grpclib's protocol and watches its calls."""

    def __init__(self, listener: GuardedListener, inner: asyncio.Protocol) -> None:
        self._listener = listener
        self._inner = inner
        self._admitted: Admitted | None = None
        self._transport: asyncio.Transport | None = None
        self._raw: asyncio.Transport | None = None
        """The socket's own transport, under the TLS layer if there is one."""
        self._connected = False
        self._calls = 0
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None
        """When the last call ended (loop time); None before the first call."""
        # The TLS layer hands over the bytes that followed the handshake before the handshake
        # task resumes: they wait here for grpclib's protocol.
        self._early: list[bytes] = []
        self._early_eof = False
        self._unwatch: Callable[[], None] | None = None

    # -- from the socket -------------------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # A stream transport: uvloop's have asyncio.Transport's methods but not its class.
        transport = cast(asyncio.Transport, base)
        listener = self._listener
        if listener.closing:
            transport.abort()
            return
        address = _address_of(transport)
        admitted = listener.counts.admit(address)
        if isinstance(admitted, Refused):
            listener.note_refused(admitted, address)
            transport.abort()
            return
        self._admitted = admitted
        self._transport = transport
        self._raw = transport
        listener.connections.add(self)
        keep_alive(transport)
        if listener.tls is None:
            self._begin(transport)
        else:
            # No byte may reach this protocol before the TLS layer takes the transport over.
            transport.pause_reading()
            listener.start_handshake(self, transport, listener.tls)

    async def handshake(self, raw: asyncio.Transport, tls: ssl.SSLContext) -> None:
        """Secure the connection within the handshake timeout, then serve it."""
        listener = self._listener
        if raw.is_closing():
            self._release()
            return
        loop = asyncio.get_running_loop()
        loop.call_soon(lean_tls_read_buffer, raw)
        try:
            secured = await loop.start_tls(
                raw,
                self,
                tls,
                server_side=True,
                ssl_handshake_timeout=listener.limits.handshake_timeout,
                ssl_shutdown_timeout=listener.limits.handshake_timeout,
            )
        except BaseException as error:
            raw.abort()
            drop_read_callback(raw)
            self._release()
            if isinstance(error, ssl.SSLCertVerificationError) and listener.on_unverified_peer:
                listener.on_unverified_peer()
            if isinstance(error, OSError):
                return  # the peer failed or abandoned its handshake (ssl.SSLError is an OSError)
            raise
        if secured is None or secured.is_closing():
            self._release()
            return
        if self._admitted is not None and transport_certificate(secured) is not None:
            listener.counts.verified(self._admitted)
        self._begin(secured)

    def _begin(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._unwatch = watch_calls(self._inner, self._call_started, self._call_ended)
        # grpclib writes each step of an answer on its own: one TLS record and send each.
        connect_lean(self._inner, transport)
        self._connected = True
        self._arm(self._listener.limits.first_request_timeout)
        early, self._early = self._early, []
        for data in early:
            self._inner.data_received(data)
        if self._early_eof and not self._inner.eof_received():
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self._connected:
            self._inner.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._connected:
            return self._inner.eof_received()
        self._early_eof = True
        return True

    def pause_writing(self) -> None:
        if self._connected:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._connected:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._raw is not None:
            drop_read_callback(self._raw)
            self._raw = None
        if self._connected:
            self._connected = False
            self._inner.connection_lost(exc)
        if self._unwatch is not None:
            # Calls still winding down count for nothing now; and grpclib's protocol no
            # longer holds this one, so it is freed when the transport lets it go.
            self._unwatch()
            self._unwatch = None

    # -- calls and timers ------------------------------------------------------------------

    # The idle timer is not moved at every call (a connection making a call every few seconds
    # would cancel and set one each time): a call's end notes the time, and a timer that fires
    # early sets itself again for what is left of the idle time.

    def _call_started(self) -> None:
        self._calls += 1

    def _call_ended(self) -> None:
        self._calls -= 1
        if self._calls == 0:
            loop = asyncio.get_running_loop()
            self._idle_since = loop.time()
            if self._timer is None or self._timer.when() > self._idle_since + self._idle_limit():
                self._arm(self._idle_limit())

    def _idle_limit(self) -> float:
        return self._listener.limits.idle_timeout

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._calls:
            return  # the end of the last call sets the timer again
        if self._idle_since is not None:
            left = self._idle_since + self._idle_limit() - asyncio.get_running_loop().time()
            if left > 0:
                self._arm(left)
                return
        self.abort()

    def abort(self) -> None:
        """Close at once: the peer has no call in progress (or the listener is closing)."""
        if self._transport is not None:
            self._transport.abort()
        self._release()

    def _release(self) -> None:
        self._disarm()
        if self._admitted is not None:
            self._listener.counts.release(self._admitted)
        self._listener.connections.discard(self)


async def serve_tcp(
    server: grpclib.server.Server,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext,
    limits: ConnectionLimits,
    name: str,
    reuse_port: bool = False,
    on_unverified_peer: Callable[[], None] | None = None,
) -> GuardedListener:
    """Serve ``server`` over TLS on ``host``:``port`` (0: any free port) within ``limits``;
    ``on_unverified_peer`` is told of every client certificate that failed verification."""

    async def listen(make_protocol: ProtocolFactory) -> GuardedListener:
        listener = GuardedListener(
            make_protocol, limits, tls=tls, name=name, on_unverified_peer=on_unverified_peer
        )
        loop = asyncio.get_running_loop()
        return listener.listen_on(
            await loop.create_server(
                listener.protocol, host, port, backlog=BACKLOG, reuse_port=reuse_port
            )
        )

    return await start_on(server, listen)


async def serve_unix(
    server: grpclib.server.Server,
    path: Path,
    *,
    directory_mode: int,
    socket_mode: int,
    limits: ConnectionLimits,
    name: str,
) -> GuardedListener:
    """Serve ``server`` on a unix socket at ``path`` in a safe directory (see
    :mod:`pyspire.transport.unix`) within ``limits``."""

    async def listen(make_protocol: ProtocolFactory) -> GuardedListener:
        sock = await asyncio.to_thread(
            bind_unix_socket,
            path,
            directory_mode=directory_mode,
            socket_mode=socket_mode,
            backlog=BACKLOG,
        )
        listener = GuardedListener(make_protocol, limits, tls=None, name=name)
        loop = asyncio.get_running_loop()
        try:
            unix_server = await loop.create_unix_server(listener.protocol, sock=sock)
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        return listener.listen_on(unix_server)

    return await start_on(server, listen)
