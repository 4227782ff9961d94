"""Benchmark of what connected agents cost a server in memory and in garbage-collection pauses.

Run from the repository root: ``.venv/bin/python tests/bench/bench_connection_memory.py``
(``--connections 1000,5000`` by default: the counts reached one after the other, each
connection staying open; ``--entries`` entries are authorized to the agent, 10 by default).

Two servers run in turn, each in its own process, each measured from its own floor:

- **the floor**: a bare asyncio TLS echo server (mutual TLS, the same 16 KiB TLS read buffer
  as pyspire's listener, and once more with asyncio's default buffer), to which the connections
  each send one message and then stay open: what an idle OpenSSL connection costs in Python.
- **pyspire-server**: a real server started through ``gc_pauses.py`` (every collection timed).
  One agent attests with a join token; then connections are opened the way an agent opens its
  one connection (:class:`pyspire.agent.client.ServerClient`, presenting the agent SVID), each
  running SyncAuthorizedEntries once and staying open. Connections come from many loopback
  source addresses (``127.0.x.y``), under the server's bound on unverified connections per
  address. With every connection open, each syncs ``--syncs`` more times (as agents do every
  few seconds), and the sync latency (p50, p99, max) is printed with the collector's pauses
  during that load (count, p99, max; the longest per generation).

With ``--loop uvloop`` (see :mod:`event_loops`), both servers run on uvloop: its own TLS
transport keeps its own read buffers (the listener's shared 16 KiB buffer is asyncio's TLS
layer's alone), so the echo floor is then uvloop's TLS echo, as it comes.

For each count, the resident memory growth over the process's floor per connection is printed
for both servers, and pyspire's as a ratio to the echo server's. The file-descriptor limit of
this process (and so of both servers) is raised to its hard limit first. Nothing is asserted:
benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import datetime
import functools
import json
import os
import resource
import signal
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpclib.client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyspire_nodeattestor_join_token.plugin import AgentJoinTokenAttestor, AgentJoinTokenConfig

import pyspire.agent.client as agent_client
from pyspire.agent.client import ServerClient
from pyspire.transport.listener import lean_tls_read_buffer
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import PyspireError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import make_host_services

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from event_loops import loop_environment
from processes import (
    TRUST_DOMAIN,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
)

HERE = Path(__file__).resolve().parent

TD = TrustDomain(TRUST_DOMAIN)
PER_ADDRESS = 48
"""Connections opened from each loopback source address (under the server's bound of
unverified connections per address, which holds while a handshake is in progress)."""
CONCURRENCY = 64
"""Connections opened (and syncs run) at once."""


# -- this process ---------------------------------------------------------------------------


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def lean_client_buffers() -> None:
    """This process holds thousands of client connections: give each the small TLS read
    buffer too, so the benchmark's own memory stays modest (the servers are not affected)."""
    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def sources() -> Iterator[str]:
    """Loopback source addresses, :data:`PER_ADDRESS` connections each."""
    number = 0
    while True:
        host = 256 + number // PER_ADDRESS  # from 127.0.1.0 on, clear of 127.0.0.1
        address = f"127.{(host >> 16) & 255}.{(host >> 8) & 255}.{host & 255}"
        number += 1
        yield address


async def gather_bounded(actions: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(action: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await action()

    return await asyncio.gather(*(one(action) for action in actions))


# -- certificates for the echo server --------------------------------------------------------


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def write_echo_credentials(folder: Path) -> None:
    """A CA, a server certificate and a client certificate (PEM files) in ``folder``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("echo ca", ca_key, None)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(name, key, ("echo ca", ca_key))
        (folder / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


# -- the echo server (run as a child process) -------------------------------------------------


class _Echo(asyncio.Protocol):
    def __init__(self, context: ssl.SSLContext, lean: bool, keep: set[asyncio.Task[None]]) -> None:
        self._context = context
        self._lean = lean
        self._keep = keep
        self._transport: asyncio.Transport | None = None
        self._early = b""  # bytes the TLS layer hands over before start_tls returns

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._lean:
            self._transport = transport
            return
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._secure(transport))
        self._keep.add(task)
        task.add_done_callback(self._keep.discard)

    async def _secure(self, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(lean_tls_read_buffer, raw)
        try:
            secured = await loop.start_tls(raw, self, self._context, server_side=True)
        except OSError:
            raw.abort()
            return
        self._transport = secured
        if self._early:
            secured.write(self._early)
            self._early = b""

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)
        else:
            self._early += data


async def echo_server(folder: Path, lean: bool) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    context.load_verify_locations(folder / "ca.pem")
    keep: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Echo(context, lean, keep),
        "127.0.0.1",
        0,
        ssl=None if lean else context,
        backlog=1024,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


# -- measuring the echo server ----------------------------------------------------------------


async def echo_connections(
    port: int, folder: Path, count: int, addresses: Iterator[str], held: list[Any]
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(folder / "ca.pem")
    context.load_cert_chain(folder / "client.pem", folder / "client.key")

    async def one() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, local_addr=(next(addresses), 0)
        )
        writer.write(b"ping")
        await reader.readexactly(4)
        held.append(writer)

    await gather_bounded([one for _ in range(count)])


async def measure_echo(
    folder: Path, counts: Sequence[int], lean: bool, loop: str = "asyncio"
) -> dict[int, float]:
    """KiB per connection for each count, over the echo server's floor."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--echo-server",
        str(folder),
        *(["--lean"] if lean else []),
        stdout=asyncio.subprocess.PIPE,
        env=loop_environment(loop),
    )
    assert process.stdout is not None
    try:
        port = int(await process.stdout.readline())
        held: list[asyncio.StreamWriter] = []
        addresses = sources()
        await echo_connections(port, folder, 1, addresses, held)  # code paths loaded
        await asyncio.sleep(0.5)
        floor = rss_kib(process.pid)
        per_connection = {}
        for count in counts:
            await echo_connections(port, folder, count - len(held), addresses, held)
            await asyncio.sleep(0.5)
            per_connection[count] = (rss_kib(process.pid) - floor) / (len(held) - 1)
        for writer in held:
            writer.transport.abort()
        return per_connection
    finally:
        process.terminate()
        await process.wait()


# -- measuring pyspire-server -----------------------------------------------------------------


class ProbedServer(ServerProcess):
    """``pyspire-server run`` started through ``gc_pauses.py``."""

    def __init__(
        self, settings: ServerSettings, thresholds: str = "", loop: str = "asyncio"
    ) -> None:
        super().__init__(settings)
        self.gc_stats = settings.root / "gc.json"
        self.thresholds = thresholds
        self.loop = loop

    def launch(self, env: Any = None) -> None:
        environment = loop_environment(self.loop)
        if self.thresholds:
            environment["PYSPIRE_BENCH_GC_THRESHOLDS"] = self.thresholds
        self.spawn(
            [
                sys.executable,
                str(HERE / "gc_pauses.py"),
                str(self.gc_stats),
                "server",
                "run",
                "-config",
                str(self.config),
            ],
            environment,
        )

    async def gc_pauses(self) -> dict[str, Any]:
        """The collections since the last call."""
        assert self.process is not None
        self.gc_stats.unlink(missing_ok=True)
        os.kill(self.process.pid, signal.SIGUSR1)
        for _ in range(100):
            if self.gc_stats.exists():
                stats: dict[str, Any] = json.loads(self.gc_stats.read_text())
                return stats
            await asyncio.sleep(0.05)
        raise RuntimeError("the server wrote no GC statistics")


class AgentIdentity:
    """What the attested agent holds, and connections made the way the agent makes them."""

    def __init__(self, chain: tuple[bytes, ...], key: ec.EllipticCurvePrivateKey) -> None:
        self.chain = chain
        self.key = key
        self.bundle: Bundle | None = None

    def client(self, port: int) -> ServerClient:
        client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=self.bundle)
        client.use_identity(self.chain, self.key)
        return client


async def attest(port: int, token: str, directory: Path) -> tuple[SpiffeId, AgentIdentity]:
    attestor = AgentJoinTokenAttestor()
    host = make_host_services(directory, plugin_name="join_token")
    await attestor.configure(AgentJoinTokenConfig(token=token), host)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    client = ServerClient(trust_domain=TD, address="127.0.0.1", port=port, bundle=None)
    try:
        result = await client.attest("join_token", attestor, csr)
        identity = AgentIdentity(result.svid.cert_chain, key)
        identity.bundle = await client.fetch_bundle()
    finally:
        await client.close()
        await attestor.close()
    return result.svid.spiffe_id, identity


def bind_sources(addresses: Iterator[str]) -> None:
    """Connections of :class:`ServerClient` in this process come from ``addresses`` in turn,
    and share one TLS context per set of credentials (as one agent would hold one)."""

    class SourceBoundChannel(grpclib.client.Channel):
        async def _create_connection(self) -> Any:
            _, protocol = await self._loop.create_connection(
                self._protocol_factory,
                self._host,
                self._port,
                ssl=self._ssl,
                local_addr=(next(addresses), 0),
            )
            return protocol

    build = agent_client.build_client_context
    contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}

    def shared_context(
        bundle_der: Sequence[bytes], chain_der: Sequence[bytes] = (), private_key: Any = None
    ) -> ssl.SSLContext:
        key = (tuple(bundle_der), tuple(chain_der), id(private_key))
        if key not in contexts:
            contexts[key] = build(bundle_der, chain_der, private_key)
        return contexts[key]

    agent_client.Channel = SourceBoundChannel  # type: ignore[misc]
    agent_client.build_client_context = shared_context  # type: ignore[assignment]


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def sync_round(clients: Sequence[ServerClient], expected: int) -> list[float]:
    """Each client syncs once; the latencies of those that succeeded (failures are printed)."""

    async def one(client: ServerClient) -> float | str:
        started = time.perf_counter()
        try:
            entries = await client.fetch_authorized_entries()
        except PyspireError as error:
            return str(error)
        if len(entries) != expected:
            raise RuntimeError(f"synced {len(entries)} entries, expected {expected}")
        return time.perf_counter() - started

    outcomes = await gather_bounded([functools.partial(one, client) for client in clients])
    failures = [outcome for outcome in outcomes if isinstance(outcome, str)]
    if failures:
        print(f"  {len(failures)} of {len(clients)} syncs failed, first: {failures[0]}")
    return [outcome for outcome in outcomes if isinstance(outcome, float)]


async def measure_server(
    server: ProbedServer, identity: AgentIdentity, counts: Sequence[int], entries: int, syncs: int
) -> dict[int, float]:
    pid = server.process.pid if server.process is not None else 0
    port = server.settings.port
    warm = identity.client(port)
    await sync_round([warm], entries)
    await warm.close()
    await asyncio.sleep(1.0)
    floor = rss_kib(pid)
    start_pauses = await server.gc_pauses()
    print(
        f"pyspire-server floor: RSS {floor / 1024:.1f} MiB, "
        f"{start_pauses['tracked_objects']} objects tracked by the collector, "
        f"{start_pauses['frozen_objects']} frozen, thresholds {start_pauses['threshold']}"
    )
    clients: list[ServerClient] = []
    per_connection = {}
    for count in counts:
        started = time.monotonic()
        added = [identity.client(port) for _ in range(count - len(clients))]
        await sync_round(added, entries)
        clients.extend(added)
        took = time.monotonic() - started
        await asyncio.sleep(1.0)
        rss = rss_kib(pid)
        per_connection[count] = (rss - floor) / count
        opening = await server.gc_pauses()
        print(
            f"{count} agent connections ({len(added)} opened and synced in {took:.1f}s): "
            f"server RSS {rss / 1024:.1f} MiB, +{(rss - floor) / 1024:.1f} MiB over the floor, "
            f"{per_connection[count]:.1f} KiB per connection; "
            f"{opening['tracked_objects']} objects tracked"
        )
        latencies: list[float] = []
        started = time.monotonic()
        for _ in range(syncs):
            latencies.extend(await sync_round(clients, entries))
        took = time.monotonic() - started
        pauses = await server.gc_pauses()
        print(
            f"  {syncs} syncs on each of {count} connections in {took:.1f}s: latency "
            f"p50 {1000 * statistics.median(latencies):.1f} ms, "
            f"p99 {1000 * percentile(latencies, 0.99):.1f} ms, max {1000 * max(latencies):.1f} ms"
            f"; {pauses['collections']} collections during them"
        )
        for clock in ("wall", "cpu"):
            figures = pauses[clock]
            print(
                f"    GC pauses ({clock}): p99 {figures['p99_ms']:.1f} ms, "
                f"max {figures['max_ms']:.1f} ms (max by generation "
                f"{figures['max_ms_by_generation']}), total {figures['total_ms']:.0f} ms"
            )
    for client in clients:
        await client.close()
    return per_connection


def start_server(
    root: Path, entries: int, thresholds: str = "", loop: str = "asyncio"
) -> tuple[ProbedServer, AgentIdentity]:
    settings = ServerSettings(root=root, port=free_port(), log_level="WARN")
    server = ProbedServer(settings, thresholds, loop)
    server.start()
    agent_id, identity = asyncio.run(
        attest(server.settings.port, server.generate_token(), root / "agent")
    )
    for number in range(entries):
        server.create_entry(
            f"spiffe://{TRUST_DOMAIN}/bench/workload-{number}", str(agent_id), f"unix:uid:{number}"
        )
    return server, identity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="1000,5000")
    parser.add_argument("--entries", type=int, default=10)
    parser.add_argument("--syncs", type=int, default=3)
    parser.add_argument(
        "--thresholds", default="", help="collector thresholds a,b,c instead of the server's"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the echo server")
    parser.add_argument(
        "--loop", default="asyncio", help="the servers' event loop: asyncio, uvloop"
    )
    parser.add_argument("--echo-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lean", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo_server is not None:
        asyncio.run(echo_server(args.echo_server, args.lean))
        return 0
    loop_environment(args.loop)  # an unknown loop fails here, before any server starts
    counts = sorted(int(count) for count in args.connections.split(","))
    hard = raise_fd_limit()
    lean_client_buffers()
    print(f"file descriptor limit raised to {hard}; counts {counts}")
    root = short_temp_dir()
    (root / "agent").mkdir()
    server, identity = start_server(root, args.entries, args.thresholds, args.loop)
    try:
        bind_sources(sources())
        pyspire = asyncio.run(measure_server(server, identity, counts, args.entries, args.syncs))
    finally:
        try:
            server.terminate()
        except ProcessError as error:
            print(f"({error}: killed)")
            server.kill()
    if args.no_floor:
        return 0
    echo_folder = root / "echo"
    echo_folder.mkdir()
    write_echo_credentials(echo_folder)
    default = asyncio.run(measure_echo(echo_folder, counts, lean=False, loop=args.loop))
    if args.loop != "asyncio":
        for count in counts:
            print(
                f"{count} connections on {args.loop}: pyspire-server {pyspire[count]:.1f} KiB "
                f"per connection; floor (TLS echo on {args.loop}) {default[count]:.1f} KiB, "
                f"{pyspire[count] / default[count]:.2f}x the floor"
            )
        return 0
    lean = asyncio.run(measure_echo(echo_folder, counts, lean=True))
    for count in counts:
        print(
            f"{count} connections: pyspire-server {pyspire[count]:.1f} KiB per connection; "
            f"floor (TLS echo, 16 KiB read buffer) {lean[count]:.1f} KiB, "
            f"{pyspire[count] / lean[count]:.2f}x the floor "
            f"(TLS echo with asyncio's 256 KiB buffer: {default[count]:.1f} KiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
