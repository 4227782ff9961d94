"""Benchmark of what grpclib's HTTP/2 stack costs per call, with and without :mod:`pyspire.
transport.h2_lean`.

Run from the repository root: ``.venv/bin/python tests/bench/bench_http2_call.py`` (``--calls``
per block, ``--blocks`` of each kind, taken in turn).

One process holds a plain grpclib server (one unary method answering an empty message, as
``empty_grpc_server.py``) on a unix socket and a grpclib client making one call at a time on one
connection. The figure is the process's CPU time per call, client and server together: the
floor is grpclib as it comes; the other serves each connection through
:func:`~pyspire.transport.grpclib_protocol.lighten_connection`, everything else equal (same
protocol wrapper, same client). The client's share is the same in both, so the difference is
what the server saves per call. ``bench_sync_cost.py`` gives the saving in a real server
against a separate client, with more noise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import grpclib.const
import grpclib.server
from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from empty_grpc_server import EMPTY_CALL, Nothing

from pyspire.proto.messages import EncodedMessage
from pyspire.transport.grpclib_protocol import lighten_connection
from pyspire.transport.grpclib_server import ProtocolFactory, start_on


class _Connection(asyncio.Protocol):
    """grpclib's protocol behind one forwarding layer, lightened or not once connected."""

    def __init__(self, inner: asyncio.Protocol, lean: bool) -> None:
        self._inner = inner
        self._lean = lean

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)
        if self._lean:
            lighten_connection(self._inner)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)


async def serve(path: Path, lean: bool) -> grpclib.server.Server:
    server = grpclib.server.Server([Nothing()])

    async def listen(factory: ProtocolFactory) -> asyncio.Server:
        def protocol() -> asyncio.Protocol:
            return _Connection(factory(), lean)

        return await asyncio.get_running_loop().create_unix_server(protocol, str(path))

    await start_on(server, listen)
    return server


async def block(path: Path, calls: int) -> float:
    """CPU seconds per call over ``calls`` calls on a new connection (after a warm-up)."""
    channel = Channel(path=str(path))
    try:
        for number in range(calls + 20):
            if number == 20:
                started = time.process_time()
            async with channel.request(
                EMPTY_CALL,
                grpclib.const.Cardinality.UNARY_UNARY,
                EncodedMessage,
                EncodedMessage,
            ) as stream:
                await stream.send_message(EncodedMessage(b""), end=True)
                await stream.recv_message()
                await stream.recv_trailing_metadata()
        return (time.process_time() - started) / calls
    finally:
        channel.close()


async def main(calls: int, blocks: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ps-h2-", dir="/tmp") as folder:
        paths = {lean: Path(folder) / f"{lean}.sock" for lean in (False, True)}
        servers = [await serve(paths[lean], lean) for lean in (False, True)]
        figures: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(blocks):
            for lean in (False, True):
                figures[lean].append(await block(paths[lean], calls))
        for server in servers:
            server.close()
            await server.wait_closed()
    plain = statistics.median(figures[False])
    lean = statistics.median(figures[True])
    print(f"process CPU per call, client and server (median of {blocks} blocks of {calls} calls)")
    print(f"  floor: grpclib as it comes        {plain * 1e6:7.1f} us")
    print(f"  lightened server connection      {lean * 1e6:7.1f} us   {lean / plain:.2f}x floor")
    print(f"  saved per call                   {(plain - lean) * 1e6:7.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per block")
    parser.add_argument("--blocks", type=int, default=7, help="blocks of each kind, in turn")
    arguments = parser.parse_args()
    cast(Any, asyncio).run(main(arguments.calls, arguments.blocks))
