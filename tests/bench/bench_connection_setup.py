"""Benchmark of what a new connection costs the server: its CPU per connection, TLS handshake and
first call, anonymous and mutual TLS.

Run from the repository root: ``.venv/bin/python tests/bench/bench_connection_setup.py`` (300
connections per block, 32 at a time, 5 blocks of each kind; ``--connections``, ``--at-once`` and
``--blocks`` to change them).

A storm of agents costs the server two new connections per agent before any attestation work:
an anonymous one (AttestAgent, before the agent has an SVID) and a mutual-TLS one (every call
after). Here a real ``pyspire-server`` (SQLite datastore, disk key manager, ``log_level =
"WARN"``) is started and one agent attests with a join token, for an SVID to connect with. In a
block, ``--connections`` clients, each from its own loopback address (the server bounds
unverified connections per address), ``--at-once`` at a time, each open a TLS connection, make
one GetBundle call (anyone may make it, and the server answers it from a kept encoding: the
call is as cheap as a call gets) and close. The figure is the server process's CPU time (user
+ system of all its threads, from ``/proc``) from the first connection until a quiet moment
after the last one closed, less what the idle server burns in the same wall time, divided by
the number of connections.

Two references are measured in the same run, their blocks taken in turn with the server's:

- **floor**: the server side of the bare TLS handshake, in this process, through memory BIOs
  (OpenSSL alone: no socket, no event loop), with a context built as the server's
  (:func:`~pyspire.transport.tls.build_server_context`, P-256 keys like the server's), the same
  anonymous and mutual handshakes; its CPU time (the server's calls only) per handshake. What a
  connection costs above it is the Python around the handshake (asyncio's TLS layer, the
  listener, grpclib, h2, the call) and the system calls of a socket.
- **plain grpclib**: the same connections to ``empty_grpc_server.py`` (plain grpclib over the
  server's TLS context, one method answering an empty message), making its empty call.

A third, in-process figure isolates one step of a new connection: coding its first header
blocks (the request an agent sends first, the server's answer headers and trailers) with a
new connection's codecs, plain hpack's against :mod:`pyspire.transport.hpack_memo`'s, best of
a few runs.

Printed: each kind's median per connection and its range over the blocks, and its ratio to the
floor of its kind measured in the same round (the median and range of the rounds' ratios).
Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import shutil
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from bench_restart_sync import attest
from bench_sync_cost import TD, EmptyServer, empty_call, idle_rate, process_cpu
from channels import SourceBoundChannel, anonymous_context
from grpclib.client import Channel
from hpack import Decoder, Encoder
from processes import ProcessError, ServerProcess, ServerSettings, free_port, short_temp_dir

from pyspire.proto.messages import EncodedMessage, call_unary
from pyspire.transport.hpack_memo import MemoDecoder, MemoEncoder
from pyspire.transport.tls import build_client_context, build_server_context
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing.pki import TestAuthority

GET_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetBundle"
CALL_TIMEOUT = 30.0
SETTLE = 0.3
"""Seconds after the last connection closed that still count: the server sees the closes."""
FIRST_ADDRESS = ipaddress.IPv4Address("127.91.0.1")
KINDS = ("anonymous", "mutual")


def _round_trip(
    client: ssl.SSLObject,
    client_in: ssl.MemoryBIO,
    client_out: ssl.MemoryBIO,
    server: ssl.SSLObject,
    server_in: ssl.MemoryBIO,
    server_out: ssl.MemoryBIO,
) -> float:
    """Run one handshake between ``client`` and ``server`` to its end; the server's CPU time."""
    spent = 0.0
    client_done = server_done = False
    while not (client_done and server_done):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        if not server_done:
            started = time.thread_time()
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            spent += time.thread_time() - started
        client_in.write(server_out.read())
    return spent


FIRST_REQUEST = [
    (":method", "POST"),
    (":scheme", "https"),
    (":path", "/spire.api.server.agent.v1.Agent/AttestAgent"),
    (":authority", "127.0.0.1:8081"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-python-grpclib/0.4.9 (linux; python 3.11)"),
    ("grpc-timeout", "119S"),
]
FIRST_ANSWER = [(":status", "200"), ("content-type", "application/grpc")]
FIRST_TRAILERS = [("grpc-status", "0")]


def first_blocks(encoder: type[Encoder], decoder: type[Decoder], connections: int) -> float:
    """Seconds per new connection to decode the first request and encode the first answer
    and trailers with codecs of the classes given, best of five runs."""
    request = Encoder().encode(FIRST_REQUEST)
    best = float("inf")
    for _ in range(5):
        started = time.thread_time()
        for _ in range(connections):
            decoder().decode(request, raw=True)
            answering = encoder()
            answering.encode(FIRST_ANSWER)
            answering.encode(FIRST_TRAILERS)
        best = min(best, (time.thread_time() - started) / connections)
    return best


class HandshakeFloor:
    """The bare TLS handshake, both ends in this process through memory BIOs."""

    def __init__(self) -> None:
        authority = TestAuthority(TD)
        server_svid = authority.issue(SpiffeId.from_segments(TD, "spire", "server"))
        client_svid = authority.issue(SpiffeId.from_segments(TD, "spire", "agent", "floor"))
        server_key = load_der_private_key(server_svid.private_key, None)
        client_key = load_der_private_key(client_svid.private_key, None)
        assert isinstance(server_key, ec.EllipticCurvePrivateKey)
        assert isinstance(client_key, ec.EllipticCurvePrivateKey)
        self._server = build_server_context(server_svid.cert_chain, server_key, [authority.der])
        self._clients = {
            "anonymous": anonymous_context(),
            "mutual": build_client_context([authority.der], client_svid.cert_chain, client_key),
        }

    def per_handshake(self, kind: str, count: int) -> float:
        """Server CPU seconds per handshake of ``kind`` over ``count`` handshakes."""
        spent = 0.0
        for _ in range(count):
            client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            client = self._clients[kind].wrap_bio(client_in, client_out, server_side=False)
            started = time.thread_time()
            server = self._server.wrap_bio(server_in, server_out, server_side=True)
            spent += time.thread_time() - started
            spent += _round_trip(client, client_in, client_out, server, server_in, server_out)
            if (server.getpeercert(binary_form=True) is not None) != (kind == "mutual"):
                raise ProcessError(f"the {kind} floor handshake did not go as its kind")
        return spent / count


async def _connections(
    count: int,
    at_once: int,
    channel_of: Callable[[int], Channel],
    call: Callable[[Channel], Awaitable[object]],
) -> None:
    """``count`` connections, ``at_once`` at a time, each on the channel ``channel_of`` makes
    for its number: connect, make one call, close."""
    slots = asyncio.Semaphore(at_once)

    async def one(number: int) -> None:
        async with slots:
            channel = channel_of(number)
            try:
                await call(channel)
            finally:
                channel.close()

    await asyncio.gather(*(one(number) for number in range(count)))


async def _per_connection(pid: int, idle: float, count: int, run: Awaitable[None]) -> float:
    """Server CPU seconds per connection of ``count`` made by ``run``, less the idle rate."""
    started, cpu = time.perf_counter(), process_cpu(pid)
    await run
    await asyncio.sleep(SETTLE)
    elapsed = time.perf_counter() - started
    return max(process_cpu(pid) - cpu - idle * elapsed, 0.0) / count


async def _get_bundle(channel: Channel) -> None:
    answer = await call_unary(
        channel, GET_BUNDLE, EncodedMessage(b""), bytes, call_timeout=CALL_TIMEOUT
    )
    if not answer:
        raise ProcessError("GetBundle answered an empty bundle")


async def measure(
    server: ServerProcess,
    mutual: ssl.SSLContext,
    empty: EmptyServer,
    floor: HandshakeFloor,
    connections: int,
    at_once: int,
    blocks: int,
) -> dict[str, list[float]]:
    """CPU seconds per connection of each block, by figure, blocks taken in turn."""
    contexts = {"anonymous": anonymous_context(), "mutual": mutual}
    starts = iter(range(0, 1 << 22, connections))

    async def pyspire_block(kind: str, idle: float) -> float:
        first, context = FIRST_ADDRESS + next(starts), contexts[kind]

        def channel_of(number: int) -> Channel:
            return SourceBoundChannel(
                str(first + number), "127.0.0.1", server.settings.port, context
            )

        run = _connections(connections, at_once, channel_of, _get_bundle)
        return await _per_connection(server.pid, idle, connections, run)

    async def plain_block(kind: str, idle: float) -> float:
        anonymous = contexts["anonymous"]

        def channel_of(number: int) -> Channel:
            if kind == "mutual":
                return empty.channel()  # its own CA's client SVID
            return Channel("127.0.0.1", empty.port, ssl=anonymous)

        run = _connections(connections, at_once, channel_of, empty_call)
        return await _per_connection(empty.process.pid, idle, connections, run)

    # One block of each first, not counted: a process's first connections import and warm up.
    for kind in KINDS:
        await pyspire_block(kind, 0.0)
        await plain_block(kind, 0.0)
        floor.per_handshake(kind, connections)
    idle = {"pyspire": await idle_rate(server.pid), "plain": await idle_rate(empty.process.pid)}
    samples: dict[str, list[float]] = {}
    for _ in range(blocks):
        for kind in KINDS:
            samples.setdefault(f"floor {kind}", []).append(floor.per_handshake(kind, connections))
            samples.setdefault(f"plain {kind}", []).append(await plain_block(kind, idle["plain"]))
            samples.setdefault(f"pyspire {kind}", []).append(
                await pyspire_block(kind, idle["pyspire"])
            )
    return samples


def _line(label: str, values: Sequence[float], floors: Sequence[float]) -> str:
    """A figure's median and range, and its ratio to the floor measured in the same round
    (the median and range of the rounds' ratios: a shared machine's load weighs on both)."""
    median = statistics.median(values)
    ratios = [value / floor for value, floor in zip(values, floors, strict=True)]
    return (
        f"  {label:<40} median {median * 1e3:6.3f} ms  range {min(values) * 1e3:.3f}-"
        f"{max(values) * 1e3:.3f} ms  {statistics.median(ratios):5.2f}x floor "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
    )


def report(samples: dict[str, list[float]], connections: int, at_once: int, blocks: int) -> None:
    print(
        f"server CPU per new connection (TLS handshake, one call, close): {connections} "
        f"connections per block, {at_once} at a time, {blocks} blocks of each kind in turn"
    )
    for kind in KINDS:
        floors = samples[f"floor {kind}"]
        print(f" {kind} TLS")
        print(_line("floor: bare TLS handshake (memory BIOs)", floors, floors))
        print(_line("plain grpclib, empty call", samples[f"plain {kind}"], floors))
        print(_line("pyspire-server, GetBundle", samples[f"pyspire {kind}"], floors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=300, help="connections per block")
    parser.add_argument("--at-once", type=int, default=32, help="connections open at a time")
    parser.add_argument("--blocks", type=int, default=5, help="blocks of each kind, in turn")
    args = parser.parse_args(argv)

    root = short_temp_dir()
    settings = ServerSettings(root=root, port=free_port(), log_level="WARN")
    server = ServerProcess(settings)
    empty: EmptyServer | None = None
    try:
        server.start()
        _, agent = asyncio.run(attest(settings.port, server.generate_token(), root / "agent"))
        if agent.bundle is None:
            raise ProcessError("the agent got no bundle")
        mutual = build_client_context(
            [authority.der for authority in agent.bundle.x509_authorities], agent.chain, agent.key
        )
        empty = EmptyServer(root)
        floor = HandshakeFloor()
        samples = asyncio.run(
            measure(server, mutual, empty, floor, args.connections, args.at_once, args.blocks)
        )
    except ProcessError as error:
        print(f"benchmark failed: {error}\nserver log:\n{server.log()[-4000:]}", file=sys.stderr)
        return 1
    finally:
        if empty is not None:
            empty.stop()
        server.kill()
        shutil.rmtree(root, ignore_errors=True)
    report(samples, args.connections, args.at_once, args.blocks)
    plain = first_blocks(Encoder, Decoder, args.connections)
    memo = first_blocks(MemoEncoder, MemoDecoder, args.connections)
    print(" a new connection's first header blocks (request decoded, answer and trailers encoded)")
    print(f"  plain hpack                              {plain * 1e6:6.1f} us")
    print(f"  pyspire's codec (hpack_memo)             {memo * 1e6:6.1f} us  {memo / plain:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
