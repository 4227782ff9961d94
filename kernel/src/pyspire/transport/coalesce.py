"""A transport that gathers what one turn of the event loop writes into one write.

grpclib writes each HTTP/2 step of a call as soon as it is made: the response headers, the
message, the trailers, and the window updates of what it read, each its own
``transport.write``. Under TLS every write is a TLS record and a ``send`` system call, so a
unary answer costs three of each, and those, not the gRPC work, are most of what a small call
costs the server. :class:`CoalescingTransport` keeps the bytes written during one turn of the
loop and writes them together at the start of the next (``loop.call_soon``): an answer made
without waiting (a kept answer, say) leaves as one record in one ``send``, and nothing waits
longer than the turn it was written in. Closing writes what is kept first; aborting drops it,
as aborting the transport itself would.
"""

from __future__ import annotations

__all__ = ["CoalescingTransport"]

import asyncio
from typing import Any


class CoalescingTransport(asyncio.Transport):
    """Wraps ``inner`` (an open transport); see the module documentation. Everything but
    writing and closing is the inner transport's."""

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._inner = inner
        self._loop = loop
        self._kept: list[bytes] = []
        self._scheduled = False

    @property
    def inner(self) -> asyncio.Transport:
        """The transport the bytes go to."""
        return self._inner

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._kept.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        kept = self._kept
        if not kept:
            return
        data = kept[0] if len(kept) == 1 else b"".join(kept)
        kept.clear()
        if not self._inner.is_closing():
            self._inner.write(data)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + sum(len(data) for data in self._kept)

    def write_eof(self) -> None:
        self._flush()
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        self._flush()
        self._inner.close()

    def abort(self) -> None:
        self._kept.clear()
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    # -- the inner transport's ---------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()
