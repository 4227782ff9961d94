"""What one turn of the loop writes leaves in one write; closing sends it, aborting drops it."""

from __future__ import annotations

import asyncio
from typing import Any

from pyspire.transport.coalesce import CoalescingTransport


class RecordingTransport(asyncio.Transport):
    """A transport that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.1", 1)}.get(name, default)


async def turn() -> None:
    """Let the loop run the callbacks scheduled so far."""
    await asyncio.sleep(0)


async def test_writes_of_one_turn_leave_together_at_the_next() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"headers")
    transport.write(b"")
    transport.write(memoryview(b"data"))
    transport.writelines([b"trai", b"lers"])
    assert inner.writes == []
    assert transport.get_write_buffer_size() == len(b"headersdatatrailers")
    await turn()
    assert inner.writes == [b"headersdatatrailers"]
    transport.write(b"next")
    await turn()
    assert inner.writes == [b"headersdatatrailers", b"next"]
    assert transport.get_extra_info("peername") == ("10.0.0.1", 1)
    assert transport.inner is inner


async def test_close_sends_what_is_kept_and_abort_drops_it() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"goaway")
    transport.close()
    assert inner.writes == [b"goaway"] and inner.closed
    await turn()
    assert inner.writes == [b"goaway"]

    other = RecordingTransport()
    transport = CoalescingTransport(other, asyncio.get_running_loop())
    transport.write(b"lost")
    transport.abort()
    await turn()
    assert other.writes == [] and other.aborted


async def test_nothing_is_written_to_a_closing_transport() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"late")
    inner.closed = True
    await turn()
    assert inner.writes == []
    assert transport.is_closing()
