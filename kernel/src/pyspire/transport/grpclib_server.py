"""Where pyspire reaches into grpclib's server: two small functions, each with its own test.

grpclib builds its listener inside ``Server.start`` with ``loop.create_server`` and offers no
way to choose the accept path, the TLS handshake timeout, or what wraps each connection.
:func:`start_on` gives a grpclib server a listener we built around its own protocol factory,
leaving it in the state ``Server.start`` would have (so ``close`` and ``wait_closed`` work
unchanged); :func:`watch_calls` tells a connection when its calls start and end, so an idle
connection can be closed, and lets grpclib's handler drop each finished call at once (it keeps
the task of every call, and so the call's HTTP/2 stream with its buffer, queue and events, until
ten more have started: 40 to 50 KiB per connection that a server of thousands of agents
holds for nothing) and let go of the error it stored for a call it cut short (which would
keep a lost connection in a reference cycle). How a connection's protocol is connected (writes
coalesced, h2 lightened) is :mod:`.grpclib_protocol`'s, shared with the client. A grpclib
upgrade that changes any seam fails their tests loudly, and nothing else in pyspire knows these
internals.
"""

from __future__ import annotations

__all__ = ["ProtocolFactory", "ServerListener", "start_on", "watch_calls"]

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpclib.protocol
import grpclib.server

ProtocolFactory = Callable[[], asyncio.Protocol]


class ServerListener(Protocol):
    """What grpclib needs of the listener it keeps: ``close`` and ``wait_closed``."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


ListenerT = TypeVar("ListenerT", bound=ServerListener)


async def start_on(
    server: grpclib.server.Server, listen: Callable[[ProtocolFactory], Awaitable[ListenerT]]
) -> ListenerT:
    """Start ``server`` on the listener ``listen`` builds from grpclib's protocol factory."""
    inner: Any = server
    factory = getattr(inner, "_protocol_factory", None)
    if factory is None or not hasattr(inner, "_server") or not hasattr(inner, "_server_closed_fut"):
        raise RuntimeError("grpclib server internals changed: start_on needs updating")
    if inner._server is not None:
        raise RuntimeError("the server is already started")
    listener = await listen(factory)
    inner._server = listener
    inner._server_closed_fut = asyncio.get_running_loop().create_future()
    return listener


class _CallWatcher(grpclib.protocol.AbstractHandler):
    """grpclib's per-connection handler, telling someone when calls start and end."""

    def __init__(
        self,
        inner: grpclib.protocol.AbstractHandler,
        started: Callable[[], None],
        ended: Callable[[], None],
    ) -> None:
        self._inner = inner
        collect = getattr(inner, "__gc_collect__", None)
        if not callable(collect):
            raise RuntimeError("grpclib server handler changed: watch_calls needs updating")
        self._collect: Callable[[], None] = collect
        self._started = started
        self._ended = ended
        self._open: set[grpclib.protocol.Stream] = set()

    def accept(
        self,
        stream: grpclib.protocol.Stream,
        headers: Any,
        release_stream: Callable[[], None],
    ) -> None:
        self._open.add(stream)
        self._started()

        def release() -> None:
            try:
                release_stream()
            finally:
                self._end(stream)
                _drop_stored_error(stream)
                # The call's task is done once this, its last step, returns.
                asyncio.get_running_loop().call_soon(self._collect)

        self._inner.accept(stream, headers, release)

    def cancel(self, stream: grpclib.protocol.Stream) -> None:
        # A call reset before its task ran never releases its stream: count it ended here.
        try:
            self._inner.cancel(stream)
        finally:
            self._end(stream)

    def close(self) -> None:
        self._inner.close()

    def _end(self, stream: grpclib.protocol.Stream) -> None:
        if stream in self._open:
            self._open.discard(stream)
            self._ended()

    def detach(self) -> None:
        """Stop telling anyone: the callbacks (and what they hold) are let go."""
        self._started = self._ended = _nothing


def _drop_stored_error(stream: grpclib.protocol.Stream) -> None:
    """Let go of the error grpclib stored to raise in a call it cut short (its connection lost,
    its deadline passed). grpclib raises that one stored exception from the call's wrapper,
    whose frame the exception's traceback then holds: a cycle through the whole connection
    (the stream, its HTTP/2 state, our watcher) that only a full collection would free."""
    wrapper = getattr(stream, "wrapper", None)
    if wrapper is not None and getattr(wrapper, "_error", None) is not None:
        wrapper._error = None


def _nothing() -> None:
    return None


def watch_calls(
    protocol: asyncio.Protocol, started: Callable[[], None], ended: Callable[[], None]
) -> Callable[[], None]:
    """Call ``started`` when a call arrives on the connection of ``protocol`` (a grpclib server
    protocol not yet connected) and ``ended`` when it is over, until the function returned is
    called. The protocol holds the callbacks: whoever owns them (and holds the protocol) calls
    it once the connection is lost, so the two are not left in a reference cycle that only the
    garbage collector could free."""
    handler = getattr(protocol, "handler", None)
    if not isinstance(handler, grpclib.protocol.AbstractHandler):
        raise RuntimeError("grpclib server protocol changed: watch_calls needs updating")
    watcher = _CallWatcher(handler, started, ended)
    protocol.handler = watcher  # type: ignore[attr-defined]
    return watcher.detach
