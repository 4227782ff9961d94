"""A small TCP load balancer on loopback, in front of several servers, for end-to-end tests and
benchmarks: agents reach every server through one address, as behind a real load balancer.

Each new client connection goes to the next backend in turn (round robin); a backend that
refuses the connection (its server is down) is skipped for the next one, so clients that
reconnect after a server died reach a live one. Bytes are relayed both ways until either side
closes, and then the other side is closed too: a client whose server died sees its connection
end, as behind a layer-4 balancer. TLS passes through untouched.

The proxy runs on an event loop in a thread of its own, so tests written with the synchronous
process helpers can start, inspect and stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

_CHUNK = 64 * 1024
_CONNECT_TIMEOUT = 5.0


class TcpProxy:
    """Round-robin TCP proxy on ``127.0.0.1:<port>`` to ``backends`` (loopback ports)."""

    def __init__(self, backends: Sequence[int]) -> None:
        if not backends:
            raise ValueError("the proxy needs at least one backend")
        self.backends = tuple(backends)
        self.port = 0
        self._turn = itertools.cycle(range(len(self.backends)))
        self._active: Counter[int] = Counter()
        self._accepted: Counter[int] = Counter()
        self._last_traffic: dict[object, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy")

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Listen on a free loopback port (``self.port``) and serve in the background."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=_CONNECT_TIMEOUT)
        return self

    def stop(self) -> None:
        """Stop listening, cut every relayed connection and end the thread."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- what it sees ----------------------------------------------------------------------

    def active(self) -> dict[int, int]:
        """Open relayed connections per backend port."""
        with self._lock:
            return {port: self._active[port] for port in self.backends}

    def accepted(self) -> dict[int, int]:
        """Connections relayed so far per backend port."""
        with self._lock:
            return {port: self._accepted[port] for port in self.backends}

    def recently_used(self, within: float) -> set[int]:
        """Backend ports with an open connection that carried bytes in the last ``within``
        seconds (a client may keep idle connections to several backends; this tells which one
        it is talking to)."""
        since = time.monotonic() - within
        with self._lock:
            return {port for port, last in self._last_traffic.values() if last >= since}

    # -- the relay -------------------------------------------------------------------------

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected = await self._connect_backend()
        if connected is None:
            return
        port, (backend_reader, backend_writer) = connected
        with self._lock:
            self._active[port] += 1
            self._accepted[port] += 1
        key = object()

        def carried() -> None:
            with self._lock:
                self._last_traffic[key] = (port, time.monotonic())

        relays = {
            asyncio.ensure_future(_pipe(reader, backend_writer, carried)),
            asyncio.ensure_future(_pipe(backend_reader, writer, carried)),
        }
        try:
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            with self._lock:
                self._active[port] -= 1
                self._last_traffic.pop(key, None)
            backend_writer.close()

    async def _connect_backend(
        self,
    ) -> tuple[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None:
        """The next backend in turn that accepts a connection, or None when none does."""
        for _ in range(len(self.backends)):
            port = self.backends[next(self._turn)]
            try:
                streams = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), _CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                continue
            return port, streams
        return None


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, carried: Callable[[], None]
) -> None:
    """Copy ``reader`` to ``writer`` until end of stream or an error on either side, calling
    ``carried`` after each chunk."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
            carried()
