"""Benchmark of idle TLS connections: what they cost a server, and that the server lets them go.

Run from the repository root: ``.venv/bin/python tests/bench/bench_idle_connections.py``
(``--connections 3000`` for the full form; the default is 1,000).

A real ``pyspire-server`` process runs with its default connection limits. This process opens
``--connections`` TLS connections to it that finish the handshake without a client certificate
(as an agent does before it has an SVID) and then send nothing, spread over loopback source
addresses (``127.0.0.x``) so the per-address bound on such connections does not refuse them.
It prints the server's resident memory and open file descriptors:

- the floor: after start and one real call (so lazily loaded code is in memory);
- with every connection open: growth per connection, and against the floor;
- after the server closed them (its first-request timeout), waiting at most ``--wait``
  seconds: how many it closed, memory against the floor, descriptors against the floor.

It does so ``--rounds`` times (default 2): memory the first round took is reused by the next,
not added to (the allocator keeps freed memory for the process rather than returning it).

Then it opens more connections from one address than the per-address bound allows and prints
how many the server refused at once. Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel

from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.server.runtime import SERVER_API_LIMITS
from pyspire.transport.tls import build_client_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from processes import ServerProcess, ServerSettings, free_port, short_temp_dir

PER_ADDRESS = 50
"""Connections opened from each loopback address (under the server's per-address bound)."""

CONNECT_CONCURRENCY = 128


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tls_context(bundle_pem: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    context.load_verify_locations(cadata=bundle_pem)
    return context


async def warm_up(port: int, bundle_pem: str) -> None:
    """One real call over TLS, so the floor includes the code a call loads."""
    authorities = [
        certificate.public_bytes(serialization.Encoding.DER)
        for certificate in x509.load_pem_x509_certificates(bundle_pem.encode())
    ]
    channel = Channel("127.0.0.1", port, ssl=build_client_context(authorities))
    try:
        await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
    finally:
        channel.close()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_idle(
    port: int, context: ssl.SSLContext, count: int, per_address: int
) -> list[Connection | None]:
    """``count`` TLS connections, ``per_address`` from each 127.0.0.x; None for a refusal."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(number: int) -> Connection | None:
        source = f"127.0.0.{2 + number // per_address}"
        async with gate:
            try:
                return await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, local_addr=(source, 0)
                )
            except (OSError, ssl.SSLError):
                return None

    return await asyncio.gather(*(one(number) for number in range(count)))


async def closed_by_server(connection: Connection) -> bool:
    reader, _ = connection
    try:
        while await reader.read(65536):
            pass
    except (OSError, ssl.SSLError):
        pass
    return True


async def wait_closed(connections: list[Connection], wait: float) -> int:
    """How many of ``connections`` the server closed within ``wait`` seconds."""
    tasks = [asyncio.create_task(closed_by_server(c)) for c in connections]
    done, pending = await asyncio.wait(tasks, timeout=wait)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return len(done)


def close_all(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.transport.abort()


async def one_round(
    number: int,
    pid: int,
    port: int,
    context: ssl.SSLContext,
    count: int,
    wait: float,
    floor_rss: int,
    floor_fds: int,
) -> None:
    """Open ``count`` idle connections, then wait for the server to close them; print both."""
    started = time.monotonic()
    opened = await open_idle(port, context, count, PER_ADDRESS)
    connections = [c for c in opened if c is not None]
    took = time.monotonic() - started
    peak_rss, peak_fds = rss_kib(pid), open_fds(pid)
    growth = peak_rss - floor_rss
    print(
        f"round {number}: {len(connections)} of {count} idle TLS connections opened in "
        f"{took:.1f}s; server RSS {peak_rss / 1024:.1f} MiB (+{growth / 1024:.1f} MiB over "
        f"the floor, {growth / max(1, len(connections)):.1f} KiB per connection, "
        f"{peak_rss / floor_rss:.2f}x the floor), {peak_fds} open fds "
        f"(+{peak_fds - floor_fds} over the floor)"
    )
    started = time.monotonic()
    closed = await wait_closed(connections, wait)
    took = time.monotonic() - started
    close_all(connections)
    await asyncio.sleep(1.0)  # the server's event loop runs the last callbacks
    after_rss, after_fds = rss_kib(pid), open_fds(pid)
    print(
        f"round {number}: server closed {closed} of {len(connections)} within {took:.1f}s "
        f"more (first-request timeout {SERVER_API_LIMITS.first_request_timeout:g}s, waited "
        f"at most {wait:g}s); then RSS {after_rss / 1024:.1f} MiB ({after_rss / floor_rss:.2f}x "
        f"the floor), {after_fds} open fds ({after_fds / floor_fds:.2f}x the floor)"
    )


async def bench(count: int, wait: float, rounds: int) -> None:
    root = short_temp_dir()
    server = ServerProcess(ServerSettings(root=root, port=free_port(), log_level="WARN"))
    server.start()
    try:
        assert server.process is not None
        pid = server.process.pid
        port = server.settings.port
        bundle_pem = server.cli("bundle", "show", "-format", "pem").stdout
        await warm_up(port, bundle_pem)
        await asyncio.sleep(1.0)
        floor_rss, floor_fds = rss_kib(pid), open_fds(pid)
        print(f"server floor: RSS {floor_rss / 1024:.1f} MiB, {floor_fds} open fds")

        context = tls_context(bundle_pem)
        for number in range(1, rounds + 1):
            await one_round(number, pid, port, context, count, wait, floor_rss, floor_fds)

        bound = SERVER_API_LIMITS.max_unverified_per_address or 0
        burst = bound + 36
        opened = await open_idle(port, context, burst, burst)
        survivors = [c for c in opened if c is not None]
        refused = burst - len(survivors)
        print(
            f"{burst} connections from one address (bound {bound}): {refused} refused at once, "
            f"{burst - refused} served"
        )
        close_all(survivors)
    finally:
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--wait", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(bench(args.connections, args.wait, args.rounds))


if __name__ == "__main__":
    main()
