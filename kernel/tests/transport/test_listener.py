"""Guarded listeners over real sockets: handshake, first-request and idle timeouts, connection
bounds, and a clean close. Limits are short so that every wait ends in well under a second."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpclib.server
import h2.config
import h2.connection
import pytest
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_private_key
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

from pyspire.proto.gen.grpc.health import v1 as health
from pyspire.transport.calls import WithCallContext
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import (
    TCP_KEEPALIVE_PROBES,
    TCP_KEEPALIVE_SECONDS,
    TLS_READ_BUFFER_BYTES,
    GuardedListener,
    lean_tls_read_buffer,
    serve_tcp,
    serve_unix,
    shared_read_buffer,
)
from pyspire.transport.tls import RotatingServerContext, build_client_context
from pyspire_sdk.model import X509Svid
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import TestAuthority

SHORT = 0.2
LONG = 30.0
WAIT = 5.0
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Health(health.HealthBase):
    """Answers SERVING; holds each call until ``release`` is set, when one is given."""

    def __init__(self) -> None:
        self.release: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def check(
        self, health_check_request: health.HealthCheckRequest
    ) -> health.HealthCheckResponse:
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        return health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)


@dataclass
class Served:
    server: grpclib.server.Server
    listener: GuardedListener
    service: Health
    port: int = 0
    path: Path | None = None


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (the server's timers run meanwhile), at most :data:`WAIT` s."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - connection counts have no event to wait on
            await asyncio.sleep(0.01)


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    """Read until the server closes the connection (at most :data:`WAIT` seconds)."""
    async with asyncio.timeout(WAIT):
        with contextlib.suppress(OSError, ssl.SSLError):
            while await reader.read(65536):
                pass


def limits(**changes: float) -> ConnectionLimits:
    values: dict[str, float] = {
        "max_connections": 16,
        "max_unverified_per_address": 8,
        "handshake_timeout": LONG,
        "first_request_timeout": LONG,
        "idle_timeout": LONG,
    }
    values.update(changes)
    return ConnectionLimits(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def authority() -> TestAuthority:
    return TestAuthority(TrustDomain("example.org"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ps-listen-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def served_tls(authority: TestAuthority, bounds: ConnectionLimits) -> AsyncIterator[Served]:
    svid = authority.issue(SpiffeId.parse("spiffe://example.org/spire/server"))
    contexts = RotatingServerContext()
    await contexts.update(svid.cert_chain, key_of(svid), [authority.der])
    service = Health()
    server = grpclib.server.Server([WithCallContext(service)])
    listener = await serve_tcp(
        server, "127.0.0.1", 0, tls=contexts.listening, limits=bounds, name="test"
    )
    try:
        yield Served(server, listener, service, port=listener.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def served_unix(directory: Path, bounds: ConnectionLimits) -> AsyncIterator[Served]:
    service = Health()
    server = grpclib.server.Server([WithCallContext(service)])
    path = directory / "api.sock"
    listener = await serve_unix(
        server, path, directory_mode=0o700, socket_mode=0o700, limits=bounds, name="test"
    )
    try:
        yield Served(server, listener, service, path=path)
    finally:
        server.close()
        await server.wait_closed()


def key_of(svid: X509Svid) -> PrivateKeyTypes:
    assert svid.private_key is not None
    return load_der_private_key(svid.private_key, None)


def anonymous(authority: TestAuthority) -> ssl.SSLContext:
    """A client context without an SVID (an agent before attestation)."""
    return build_client_context([authority.der])


def with_svid(authority: TestAuthority) -> ssl.SSLContext:
    svid = authority.issue(SpiffeId.parse("spiffe://example.org/spire/agent/x"))
    return build_client_context([authority.der], svid.cert_chain, key_of(svid))


async def check(channel: Channel) -> None:
    response = await health.HealthStub(channel).check(health.HealthCheckRequest())
    assert response.status == health.HealthCheckResponseServingStatus.SERVING


# -- time ------------------------------------------------------------------------------------


async def test_a_handshake_that_never_comes_is_cut_off(authority: TestAuthority) -> None:
    async with served_tls(authority, limits(handshake_timeout=SHORT)) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        await until(lambda: served.listener.counts.total == 1)
        await closed_by_server(reader)
        writer.close()
        await until(lambda: served.listener.counts.total == 0)


async def test_a_tls_connection_without_a_call_is_closed(authority: TestAuthority) -> None:
    """The reported case: handshake without a client certificate, then nothing."""
    async with served_tls(authority, limits(first_request_timeout=SHORT)) as served:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", served.port, ssl=anonymous(authority)
        )
        await closed_by_server(reader)
        writer.close()
        await until(lambda: served.listener.counts.total == 0)
        assert not served.listener.connections


async def test_a_connection_idle_after_its_calls_is_closed_and_the_client_comes_back(
    authority: TestAuthority,
) -> None:
    async with served_tls(authority, limits(idle_timeout=SHORT)) as served:
        channel = Channel("127.0.0.1", served.port, ssl=with_svid(authority))
        try:
            await check(channel)
            # The connection outlived its call and was then closed for idling; how soon after
            # the call is timing, so only the outcome is checked, not a moment in between.
            await until(lambda: served.listener.counts.total == 0)
            # grpclib reconnects on the same channel. It may first try the connection the
            # server just closed, before it has read the close: a client retries that, as
            # grpc clients do on a lost connection.
            for attempt in range(3):
                try:
                    await check(channel)
                    break
                except StreamTerminatedError:
                    if attempt == 2:
                        raise
            await until(lambda: served.listener.counts.total == 0)
        finally:
            channel.close()


async def test_calls_closer_than_the_idle_timeout_keep_the_connection(
    authority: TestAuthority,
) -> None:
    """The idle time counts from the end of the last call, not of the first."""
    async with served_tls(authority, limits(idle_timeout=SHORT * 3)) as served:
        channel = Channel("127.0.0.1", served.port, ssl=with_svid(authority))
        try:
            await check(channel)
            (connection,) = served.listener.connections
            for _ in range(6):
                await asyncio.sleep(SHORT)
                await check(channel)
            # Twice the idle timeout after the first call, still the first connection.
            assert served.listener.connections == {connection}
            await until(lambda: served.listener.counts.total == 0)
        finally:
            channel.close()


async def test_a_call_in_progress_is_not_idle(authority: TestAuthority) -> None:
    async with served_tls(
        authority, limits(first_request_timeout=SHORT, idle_timeout=SHORT)
    ) as served:
        served.service.release = asyncio.Event()
        channel = Channel("127.0.0.1", served.port, ssl=anonymous(authority))
        try:
            call = asyncio.create_task(check(channel))
            async with asyncio.timeout(WAIT):
                await served.service.entered.wait()
            # Longer than both timeouts: the call holds the connection open.
            await asyncio.sleep(SHORT * 3)
            assert served.listener.counts.total == 1
            served.service.release.set()
            async with asyncio.timeout(WAIT):
                await call
            await until(lambda: served.listener.counts.total == 0)
        finally:
            channel.close()


async def test_a_call_reset_before_it_ran_does_not_keep_the_connection(short_dir: Path) -> None:
    """HEADERS and RST_STREAM in one packet: grpclib cancels the call before its task runs, so
    the call never releases its stream; the connection must still count it ended."""
    async with served_unix(short_dir, limits(idle_timeout=SHORT)) as served:
        assert served.path is not None
        reader, writer = await asyncio.open_unix_connection(str(served.path))
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", HEALTH_CHECK),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )
        client.reset_stream(1)
        writer.write(client.data_to_send())
        await closed_by_server(reader)
        writer.close()
        await until(lambda: served.listener.counts.total == 0)


# -- numbers ---------------------------------------------------------------------------------


async def test_connections_over_the_bound_are_closed_at_once(short_dir: Path) -> None:
    async with served_unix(short_dir, limits(max_connections=2)) as served:
        assert served.path is not None
        kept = [await asyncio.open_unix_connection(str(served.path)) for _ in range(2)]
        await until(lambda: served.listener.counts.total == 2)
        reader, writer = await asyncio.open_unix_connection(str(served.path))
        await closed_by_server(reader)
        writer.close()
        assert served.listener.counts.total == 2
        kept[0][1].close()
        await until(lambda: served.listener.counts.total == 1)
        channel = Channel(path=str(served.path))
        try:
            await check(channel)
        finally:
            channel.close()
        for _, kept_writer in kept:
            kept_writer.close()


async def test_unverified_connections_are_bounded_per_address(authority: TestAuthority) -> None:
    async with served_tls(authority, limits(max_unverified_per_address=2)) as served:
        counts = served.listener.counts
        # Agents with SVIDs leave the per-address count once their handshake verifies them.
        agents = [
            await asyncio.open_connection("127.0.0.1", served.port, ssl=with_svid(authority))
            for _ in range(3)
        ]
        await until(lambda: counts.total == 3 and counts.unverified_from("127.0.0.1") == 0)
        strangers = [
            await asyncio.open_connection("127.0.0.1", served.port, ssl=anonymous(authority))
            for _ in range(2)
        ]
        await until(lambda: counts.unverified_from("127.0.0.1") == 2)
        with pytest.raises((OSError, ssl.SSLError, asyncio.IncompleteReadError)):
            await asyncio.open_connection("127.0.0.1", served.port, ssl=anonymous(authority))
        assert counts.total == 5
        for _, writer in agents + strangers:
            writer.close()
        await until(lambda: counts.total == 0)


async def test_closing_the_listener_closes_every_connection(authority: TestAuthority) -> None:
    async with served_tls(authority, limits()) as served:
        handshaking = await asyncio.open_connection("127.0.0.1", served.port)
        idle = await asyncio.open_connection("127.0.0.1", served.port, ssl=anonymous(authority))
        await until(lambda: served.listener.counts.total == 2)
        served.server.close()
        await served.server.wait_closed()
        for reader, writer in (handshaking, idle):
            await closed_by_server(reader)
            writer.close()
        assert served.listener.counts.total == 0
        assert not served.listener.connections


CLOSED = 20


def _cyclic_garbage_types() -> list[str]:
    """The type names of what only the cyclic collector would free now (collected, then let
    go)."""
    was = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return [type(item).__qualname__ for item in gc.garbage]
    finally:
        gc.set_debug(was)
        gc.garbage.clear()


async def test_a_closed_connection_leaves_its_protocols_to_reference_counting(
    authority: TestAuthority,
) -> None:
    """The connection's protocol, grpclib's and the call watcher between them are freed as the
    transport lets them go: the collector has none of them to find, however rarely it runs."""
    gc.collect()  # what earlier tests in this process left is not this test's to count
    async with served_tls(authority, limits(max_connections=CLOSED + 4)) as served:
        channels = [
            Channel("127.0.0.1", served.port, ssl=with_svid(authority)) for _ in range(CLOSED)
        ]
        for channel in channels:
            await check(channel)
        await until(lambda: served.listener.counts.total == CLOSED)
        for channel in channels:
            channel.close()
        del channels
        await until(lambda: served.listener.counts.total == 0)
        await asyncio.sleep(0.1)  # the transports' connection_lost callbacks
        left = _cyclic_garbage_types()
    kept = {"_GuardedConnection", "_CallWatcher", "H2Protocol", "EventsProcessor"}
    assert not kept & set(left), sorted(set(left))


async def test_a_connection_lost_during_a_call_leaves_it_to_reference_counting(
    authority: TestAuthority,
) -> None:
    """A client that goes away while its call runs (an agent closing the connection it attested
    on) leaves nothing of the connection for the collector: grpclib raises the error it stored
    for the cut call from a frame that would otherwise keep the whole connection in a cycle."""
    gc.collect()  # what earlier tests in this process left is not this test's to count
    async with served_tls(authority, limits()) as served:
        served.service.release = asyncio.Event()
        channel = Channel("127.0.0.1", served.port, ssl=with_svid(authority))
        call = asyncio.ensure_future(
            health.HealthStub(channel).check(health.HealthCheckRequest(), timeout=LONG)
        )
        await served.service.entered.wait()
        channel.close()
        with contextlib.suppress(StreamTerminatedError, ConnectionError):
            await call
        await until(lambda: served.listener.counts.total == 0)
        await asyncio.sleep(0.1)  # the transports' connection_lost callbacks
        left = _cyclic_garbage_types()
    kept = {"_CallWatcher", "H2Connection", "Connection", "Stream", "Task"}
    assert not kept & set(left), sorted(set(left))


CALLS = 20


async def test_a_finished_call_leaves_its_stream_to_reference_counting(
    authority: TestAuthority,
) -> None:
    """A call's HTTP/2 stream (grpclib's buffer, queue and events, and the request guard in
    front of its reads) is freed when the call ends: the collector finds none of it, so
    thousands of agents syncing do not pile streams up between collections."""
    gc.collect()  # what earlier tests in this process left is not this test's to count
    async with served_tls(authority, limits()) as served:
        channel = Channel("127.0.0.1", served.port, ssl=with_svid(authority))
        try:
            for _ in range(CALLS):
                await check(channel)
            await asyncio.sleep(0.1)  # the last call's stream released
            left = _cyclic_garbage_types()
        finally:
            channel.close()
    kept = {"_FrameGuard", "Stream", "Buffer", "Queue"}
    assert not kept & set(left), sorted(set(left))


async def _accepted_late(listener: GuardedListener) -> tuple[asyncio.Transport, socket.socket]:
    """A connection the kernel accepted just before the listener closed, whose protocol asyncio
    starts only now; returns its transport and the peer's socket."""
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(listener.protocol, sock=ours)
    return transport, peer


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "unix"])
async def test_a_connection_starting_after_close_is_closed_before_any_handshake(
    authority: TestAuthority, short_dir: Path, tls: bool
) -> None:
    serving = served_tls(authority, limits()) if tls else served_unix(short_dir, limits())
    async with serving as served:
        served.server.close()
        transport, peer = await _accepted_late(served.listener)
        try:
            assert transport.is_closing()
            assert not served.listener.connections
            assert served.listener.counts.total == 0
            await served.server.wait_closed()
        finally:
            peer.close()


# -- memory ----------------------------------------------------------------------------------


async def test_the_tls_layer_reads_through_a_small_buffer(authority: TestAuthority) -> None:
    """asyncio's TLS layer would keep 256 KiB per connection; the listener gives it 16 KiB.
    This drives ``lean_tls_read_buffer`` exactly as the listener does, through public asyncio
    calls, so an asyncio upgrade that changes the TLS layer fails here."""
    svid = authority.issue(SpiffeId.parse("spiffe://example.org/spire/server"))
    contexts = RotatingServerContext()
    await contexts.update(svid.cert_chain, key_of(svid), [authority.der])
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transport.pause_reading()
            accepted.set_result(transport)

    server = await loop.create_server(Accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = asyncio.create_task(
            asyncio.open_connection("127.0.0.1", port, ssl=anonymous(authority))
        )
        raw = await accepted
        loop.call_soon(lean_tls_read_buffer, raw)
        secured = await loop.start_tls(
            raw, asyncio.Protocol(), contexts.listening, server_side=True
        )
        _, writer = await client
        layer = raw.get_protocol()
        assert isinstance(layer, asyncio.BufferedProtocol)
        buffer = memoryview(layer.get_buffer(-1))
        assert buffer.nbytes == TLS_READ_BUFFER_BYTES
        # Every connection of the loop reads through the same buffer.
        assert buffer.obj is shared_read_buffer(loop).obj
        writer.close()
        assert secured is not None
        secured.abort()
    finally:
        server.close()
        await server.wait_closed()


async def test_connections_of_a_listener_share_one_read_buffer(authority: TestAuthority) -> None:
    async with served_tls(authority, limits()) as served:
        channels = [Channel("127.0.0.1", served.port, ssl=with_svid(authority)) for _ in range(2)]
        try:
            for channel in channels:
                await check(channel)
            layers = [
                connection._transport._ssl_protocol._ssl_buffer  # type: ignore[attr-defined]
                for connection in served.listener.connections
                if connection._transport is not None
            ]
            assert len(layers) == 2
            assert layers[0] is layers[1] is shared_read_buffer(asyncio.get_running_loop()).obj
        finally:
            for channel in channels:
                channel.close()


async def test_accepted_tcp_connections_are_probed_by_the_kernel(
    authority: TestAuthority,
) -> None:
    """A peer that vanishes without closing is found by TCP keepalive (Go's settings)."""
    async with served_tls(authority, limits()) as served:
        channel = Channel("127.0.0.1", served.port, ssl=with_svid(authority))
        try:
            await check(channel)
            (connection,) = served.listener.connections
            assert connection._transport is not None
            sock = connection._transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 15
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 9
            assert (TCP_KEEPALIVE_SECONDS, TCP_KEEPALIVE_PROBES) == (15, 9)
        finally:
            channel.close()


async def test_lean_tls_read_buffer_refuses_a_transport_without_a_tls_layer() -> None:
    one, other = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, one)
    try:
        with pytest.raises(RuntimeError, match="lean_tls_read_buffer needs updating"):
            lean_tls_read_buffer(transport)
    finally:
        transport.close()
        other.close()


async def test_lean_tls_read_buffer_leaves_another_loops_tls_layer_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On an event loop other than asyncio's selector loop (uvloop's, whose TLS layer keeps its
    own buffers), the function does nothing rather than refuse."""
    one, other = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, one)
    monkeypatch.setattr(asyncio, "get_running_loop", object)  # not a selector loop
    try:
        lean_tls_read_buffer(transport)
    finally:
        monkeypatch.undo()
        transport.close()
        other.close()


async def test_a_client_certificate_that_fails_verification_is_told(
    authority: TestAuthority,
) -> None:
    """A server sharing its datastore may not trust another server's new CA yet: its listener
    tells whoever asked (the bundle feed) of each client certificate it could not verify, and
    of nothing else."""
    svid = authority.issue(SpiffeId.parse("spiffe://example.org/spire/server"))
    contexts = RotatingServerContext()
    await contexts.update(svid.cert_chain, key_of(svid), [authority.der])
    told: list[None] = []
    server = grpclib.server.Server([WithCallContext(Health())])
    listener = await serve_tcp(
        server,
        "127.0.0.1",
        0,
        tls=contexts.listening,
        limits=limits(),
        name="test",
        on_unverified_peer=lambda: told.append(None),
    )
    port = listener.sockets[0].getsockname()[1]
    other = TestAuthority(TrustDomain("example.org"))
    stranger = other.issue(SpiffeId.parse("spiffe://example.org/spire/agent/x/other"))
    untrusted = build_client_context([authority.der], stranger.cert_chain, key_of(stranger))
    try:
        for context in (with_svid(authority), anonymous(authority)):
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.close()
        await until(lambda: listener.counts.total == 0)
        assert told == []
        # TLS 1.3: the client's side of the handshake completes; the server's then fails.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=untrusted)
        await closed_by_server(reader)
        writer.close()
        await until(lambda: len(told) == 1)
    finally:
        server.close()
        await server.wait_closed()
