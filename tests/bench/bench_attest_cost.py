"""Benchmark of what one AttestAgent call costs the server: its CPU per join-token attestation.

Run from the repository root: ``.venv/bin/python tests/bench/bench_attest_cost.py`` (200 agents
per block, 5 blocks of each kind; ``--agents`` and ``--blocks`` to change them).

A real ``pyspire-server`` (SQLite datastore, disk key manager, ``log_level = "WARN"`` as the load
generator runs it) is started. In each attestation block, ``--agents`` join tokens are made over
the admin socket and as many agents, each from its own loopback address (the server admits one
attestation per second per address) and with its own key, first open their TLS connection and
then all send AttestAgent at once, as a storm does: the params with the token and a CSR, and
the agent SVID back. The figure is the server process's CPU time (user + system of all its
threads, from ``/proc``) from the first call until the registry has taken in the new nodes (a
quiet half second after the last answer, which the idle rate accounts for), less what the idle
server burns in the same wall time, divided by the number of attestations. Connecting (the TLS
handshake) is outside the figure: it is the transport's, the same for every call.

The floor is the same measurement, in the same run, for an empty gRPC call
(``empty_grpc_server.py``: plain grpclib with one method that reads its request and answers an
empty message, over the server's own TLS context), on connections opened before the block, as
many at once as agents. Floor blocks and attestation blocks are taken in turn, so a shared
machine's changing load weighs on both alike. Printed: each block's figures, their median and
range, and the median's ratio to the floor's. Nothing is asserted: benchmarks print, tests
assert.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from bench_sync_cost import EmptyServer, empty_call, idle_rate, process_cpu
from channels import (
    SourceBoundChannel,
    anonymous_context,
    attestation_outcome,
    send_join_token_attestation,
)
from grpclib.client import Channel
from processes import ProcessError, ServerProcess, ServerSettings, free_port, short_temp_dir

from pyspire.cli.admin_client import connect
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb

CALL_TIMEOUT = 60.0
SETTLE = 0.5
"""Seconds after the last answer that still count: the registry refresh that follows each
new node's change event runs then."""
FIRST_ADDRESS = ipaddress.IPv4Address("127.90.0.1")


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def _attest(channel: Channel, token: str, csr: bytes) -> None:
    """One agent's AttestAgent, as the agent's client runs it; raises unless an SVID comes."""
    response = await send_join_token_attestation(channel, token, csr, call_timeout=CALL_TIMEOUT)
    outcome = attestation_outcome(response)
    if outcome != "OK":
        raise ProcessError(f"AttestAgent ended without an agent SVID: {outcome}")


async def _tokens(server: ServerProcess, count: int) -> list[str]:
    request = agent_pb.CreateJoinTokenRequest(ttl=3600)
    async with connect(server.socket_path, call_timeout=CALL_TIMEOUT) as client:
        return [str((await client.agent.create_join_token(request)).value) for _ in range(count)]


async def _cpu_per_call(
    pid: int, idle: float, count: int, calls: Callable[[], Awaitable[object]], settle: float
) -> float:
    """Server CPU seconds per call of ``count`` made by ``calls``, less the idle rate."""
    started, cpu = time.perf_counter(), process_cpu(pid)
    await calls()
    await asyncio.sleep(settle)
    elapsed = time.perf_counter() - started
    return max(process_cpu(pid) - cpu - idle * elapsed, 0.0) / count


async def _attest_block(server: ServerProcess, idle: float, block: int, agents: int) -> float:
    tokens = await _tokens(server, agents)
    csrs = await asyncio.to_thread(lambda: [_csr() for _ in range(agents)])
    context = anonymous_context()
    channels = [
        SourceBoundChannel(
            str(FIRST_ADDRESS + block * agents + number),
            "127.0.0.1",
            server.settings.port,
            context,
        )
        for number in range(agents)
    ]
    try:
        await asyncio.gather(*(channel.__connect__() for channel in channels))
        await asyncio.sleep(SETTLE)

        async def calls() -> None:
            await asyncio.gather(
                *(
                    _attest(channel, token, csr)
                    for channel, token, csr in zip(channels, tokens, csrs, strict=True)
                )
            )

        return await _cpu_per_call(server.pid, idle, agents, calls, SETTLE)
    finally:
        for channel in channels:
            channel.close()


async def _floor_block(empty: EmptyServer, idle: float, agents: int) -> float:
    channels = [empty.channel() for _ in range(agents)]
    try:
        await asyncio.gather(*(channel.__connect__() for channel in channels))
        await asyncio.sleep(SETTLE)

        async def calls() -> None:
            await asyncio.gather(*(empty_call(channel) for channel in channels))

        return await _cpu_per_call(empty.process.pid, idle, agents, calls, SETTLE)
    finally:
        for channel in channels:
            channel.close()


async def measure(
    server: ServerProcess, empty: EmptyServer, agents: int, blocks: int
) -> dict[str, list[float]]:
    """CPU seconds per call of each block, by kind (``floor``, ``attest``), taken in turn."""
    # One block of each first, not counted: the first calls of a process import and warm up.
    await _floor_block(empty, 0.0, agents)
    await _attest_block(server, 0.0, blocks, agents)
    idle = {"floor": await idle_rate(empty.process.pid), "attest": await idle_rate(server.pid)}
    samples: dict[str, list[float]] = {"floor": [], "attest": []}
    for block in range(blocks):
        samples["floor"].append(await _floor_block(empty, idle["floor"], agents))
        samples["attest"].append(await _attest_block(server, idle["attest"], block, agents))
    return samples


def _line(label: str, values: Sequence[float], floor: float) -> str:
    median = statistics.median(values)
    return (
        f"  {label:<34} median {median * 1e3:7.3f} ms  range {min(values) * 1e3:.3f}-"
        f"{max(values) * 1e3:.3f} ms  {median / floor:5.2f}x floor  "
        f"(blocks: {', '.join(f'{value * 1e3:.2f}' for value in values)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=200, help="agents attesting per block")
    parser.add_argument("--blocks", type=int, default=5, help="blocks of each kind, in turn")
    args = parser.parse_args(argv)

    root = short_temp_dir()
    server = ServerProcess(ServerSettings(root=root, port=free_port(), log_level="WARN"))
    empty: EmptyServer | None = None
    try:
        server.start()
        empty = EmptyServer(root)
        samples = asyncio.run(measure(server, empty, args.agents, args.blocks))
    except ProcessError as error:
        print(f"benchmark failed: {error}\nserver log:\n{server.log()[-4000:]}", file=sys.stderr)
        return 1
    finally:
        if empty is not None:
            empty.stop()
        server.kill()
        shutil.rmtree(root, ignore_errors=True)

    floor = statistics.median(samples["floor"])
    print(
        f"server CPU per call, {args.agents} at once per block, {args.blocks} blocks of each "
        "kind taken in turn (connections opened before each block)"
    )
    print(_line("floor: empty gRPC call, same TLS", samples["floor"], floor))
    print(_line("AttestAgent (join token)", samples["attest"], floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
