"""Benchmark of what one call to the server costs the agent's side: client CPU per call.

Run from the repository root: ``.venv/bin/python tests/bench/bench_agent_call_cost.py``
(``--calls`` per block, ``--blocks`` of each kind, taken in turn).

The server is ``empty_grpc_server.py`` in its own process (plain grpclib, one unary method that
reads its request and answers an empty message, over the server's own mutual-TLS context), so
the figure is this process's CPU time alone (``time.process_time``): the client's. Each block
opens a new connection, warms it up with a few calls and then times ``--calls`` calls made
one after the other. Three kinds of block are taken in turn, so a shared machine's changing
load weighs on all alike, and each figure is the median of its blocks (with its range):

- **floor**: grpclib's ``Channel`` as it comes, the empty call through ``Channel.request``: what
  a call costs a client before pyspire does anything;
- **channel**: the same call on the channel the agent opens (:func:`pyspire.transport.
  grpclib_client.open_channel`, when this tree has it; else the floor's again);
- **agent**: the same call through the agent's own call path (:class:`pyspire.agent.client.
  ServerClient`: its connection, time limit, server identity check and error translation),
  presenting an agent SVID as every call but attestation does.

A second table gives the client CPU of a connection's first call (TLS handshake, HTTP/2
preface and settings, the call), as floor and agent, over ``--connections`` new connections.
Figures are printed with their ratios to the floor, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import grpclib.const
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key
from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from empty_grpc_server import EMPTY_CALL

import pyspire.transport.grpclib_client as grpclib_client
from pyspire.agent.client import ServerClient
from pyspire.proto.messages import EncodedMessage
from pyspire.transport.tls import build_client_context
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import TestAuthority

TD = TrustDomain("example.org")
WARM_UP_CALLS = 20

_open_channel: Callable[..., Channel] = getattr(grpclib_client, "open_channel", Channel)


class EmptyServer:
    """``empty_grpc_server.py`` in its own process, and what a client needs to call it."""

    def __init__(self, directory: Path) -> None:
        authority = TestAuthority(TD)
        server_svid = authority.issue(SpiffeId.from_segments(TD, "spire", "server"))
        self.agent_svid = authority.issue(SpiffeId.from_segments(TD, "spire", "agent", "bench"))
        self.bundle = authority.bundle()
        (directory / "chain.der").write_bytes(server_svid.cert_chain[0])
        (directory / "key.der").write_bytes(server_svid.private_key)
        (directory / "bundle.der").write_bytes(authority.der)
        script = Path(__file__).resolve().parent / "empty_grpc_server.py"
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(directory)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def agent_key(self) -> ec.EllipticCurvePrivateKey:
        key = load_der_private_key(self.agent_svid.private_key, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def channel(self, make: Callable[..., Channel]) -> Channel:
        context = build_client_context(
            [self.bundle.x509_authorities[0].der], self.agent_svid.cert_chain, self.agent_key()
        )
        return make("127.0.0.1", self.port, ssl=context)

    def agent_client(self) -> ServerClient:
        client = ServerClient(
            trust_domain=TD, address="127.0.0.1", port=self.port, bundle=self.bundle
        )
        client.use_identity(self.agent_svid.cert_chain, self.agent_key())
        return client

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


async def channel_call(channel: Channel) -> None:
    """The empty call, as grpclib's own client makes it."""
    async with channel.request(
        EMPTY_CALL, grpclib.const.Cardinality.UNARY_UNARY, EncodedMessage, EncodedMessage
    ) as stream:
        await stream.send_message(EncodedMessage(b""), end=True)
        await stream.recv_message()


async def agent_call(client: ServerClient) -> None:
    """The empty call, through the agent's own call path."""
    await client._unary(EMPTY_CALL, EncodedMessage(b""), EncodedMessage)


async def timed(calls: int, call: Callable[[], Awaitable[None]]) -> float:
    """CPU seconds per call over ``calls`` calls, after a warm-up."""
    for _ in range(WARM_UP_CALLS):
        await call()
    gc.collect()
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) / calls


async def call_block(server: EmptyServer, kind: str, calls: int) -> float:
    if kind == "agent":
        client = server.agent_client()
        try:
            return await timed(calls, lambda: agent_call(client))
        finally:
            await client.close()
    channel = server.channel(Channel if kind == "floor" else _open_channel)
    try:
        return await timed(calls, lambda: channel_call(channel))
    finally:
        channel.close()


async def connection_block(server: EmptyServer, kind: str, connections: int) -> float:
    """CPU seconds of a new connection's first call (TLS contexts built beforehand)."""
    spent = 0.0
    for _ in range(connections):
        if kind == "agent":
            client = server.agent_client()
            # The agent builds its TLS context once per connection, off the loop: not timed.
            await client._connection(authenticated=True)
            started = time.process_time()
            await agent_call(client)
            spent += time.process_time() - started
            await client.close()
        else:
            channel = server.channel(Channel if kind == "floor" else _open_channel)
            started = time.process_time()
            await channel_call(channel)
            spent += time.process_time() - started
            channel.close()
        await asyncio.sleep(0.01)  # let the closed connection go before the next
    return spent / connections


def summary(name: str, values: list[float], floor: float) -> str:
    median = statistics.median(values)
    return (
        f"  {name:<8} {median * 1e6:8.1f} us  (range {min(values) * 1e6:.1f}-"
        f"{max(values) * 1e6:.1f})   {median / floor:.2f}x floor"
    )


async def main(calls: int, blocks: int, connections: int) -> None:
    kinds = ("floor", "channel", "agent")
    with tempfile.TemporaryDirectory(prefix="ps-call-", dir="/tmp") as folder:
        server = EmptyServer(Path(folder))
        try:
            per_call: dict[str, list[float]] = {kind: [] for kind in kinds}
            per_connection: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(blocks):
                for kind in kinds:
                    per_call[kind].append(await call_block(server, kind, calls))
                for kind in kinds:
                    per_connection[kind].append(await connection_block(server, kind, connections))
        finally:
            server.stop()
    lean = "open_channel" if _open_channel is not Channel else "grpclib's Channel (no seam)"
    print(f"client CPU per call, empty unary call over mutual TLS (median of {blocks} blocks)")
    print(f"  {calls} calls a block on one connection; channel: {lean}")
    floor = statistics.median(per_call["floor"])
    for kind in kinds:
        print(summary(kind, per_call[kind], floor))
    print(f"client CPU of a new connection's first call ({connections} connections a block)")
    floor = statistics.median(per_connection["floor"])
    for kind in kinds:
        print(summary(kind, per_connection[kind], floor))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per block")
    parser.add_argument("--blocks", type=int, default=7, help="blocks of each kind, in turn")
    parser.add_argument("--connections", type=int, default=40, help="new connections per block")
    arguments = parser.parse_args()
    cast(Any, asyncio).run(main(arguments.calls, arguments.blocks, arguments.connections))
