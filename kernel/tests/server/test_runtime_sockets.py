"""The server's listeners: an admin socket nobody else can take over, and TCP connections
bounded in number and time. Limits are passed short so that waits end in well under a second."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.client import Channel

from pyspire.catalog import Discovery
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.server.runtime import ADMIN_API_LIMITS, SERVER_API_LIMITS, ServerRuntime
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.tls import build_client_context
from pyspire.transport.unix import SocketPathError

from .test_runtime import admin_bundle, server_document

OTHER_UID = 65534
SHORT = 0.2
WAIT = 5.0


@pytest.fixture(scope="module")
def discovery() -> Discovery:
    return Discovery.load()


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    discovery: Discovery,
    *,
    tcp_limits: ConnectionLimits = SERVER_API_LIMITS,
    admin_limits: ConnectionLimits = ADMIN_API_LIMITS,
) -> AsyncIterator[ServerRuntime]:
    runtime = ServerRuntime(
        load_document(SERVER_SCHEMA, server_document(tmp_path)),
        discovery,
        tcp_limits=tcp_limits,
        admin_limits=admin_limits,
    )
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
    assert ready in done, "the server did not become ready"
    try:
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, timeout=30)


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    async with asyncio.timeout(WAIT):
        with contextlib.suppress(OSError, ssl.SSLError):
            while await reader.read(65536):
                pass


async def anonymous_context(runtime: ServerRuntime) -> ssl.SSLContext:
    bundle = await admin_bundle(runtime)
    return build_client_context([a.asn1 for a in bundle.x509_authorities])


# -- the admin socket ------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
async def test_an_admin_directory_another_user_made_first_is_refused(
    tmp_path: Path, discovery: Discovery
) -> None:
    """The reported attack: another user made the directory (0777) first, replaced the socket
    and answered ``bundle show`` with their own CA. The server must not start there."""
    planted = tmp_path / "admin"
    planted.mkdir()
    os.chown(planted, OTHER_UID, OTHER_UID)
    planted.chmod(0o777)
    with pytest.raises(SocketPathError, match=r"socket directory .*/admin belongs to uid 65534"):
        async with running(tmp_path, discovery):
            pass
    assert list(planted.iterdir()) == []


async def test_an_admin_directory_others_can_enter_is_refused(
    tmp_path: Path, discovery: Discovery
) -> None:
    loose = tmp_path / "admin"
    loose.mkdir()
    loose.chmod(0o755)
    with pytest.raises(SocketPathError, match="has mode 0755, more than the 0700"):
        async with running(tmp_path, discovery):
            pass


async def test_admin_connections_are_bounded_in_time(tmp_path: Path, discovery: Discovery) -> None:
    admin_limits = ConnectionLimits(max_connections=4, first_request_timeout=SHORT)
    async with running(tmp_path, discovery, admin_limits=admin_limits) as runtime:
        assert runtime.listening is not None
        reader, writer = await asyncio.open_unix_connection(str(runtime.listening.socket_path))
        await closed_by_server(reader)
        writer.close()


# -- the TCP listener ------------------------------------------------------------------------


async def test_tcp_connections_without_a_call_are_closed(
    tmp_path: Path, discovery: Discovery
) -> None:
    """The reported case: connections that finish the handshake without a client certificate
    and then idle, and connections that never start a handshake, are both let go."""
    tcp_limits = ConnectionLimits(
        max_connections=16,
        max_unverified_per_address=8,
        handshake_timeout=SHORT,
        first_request_timeout=SHORT,
    )
    async with running(tmp_path, discovery, tcp_limits=tcp_limits) as runtime:
        assert runtime.listening is not None
        port = runtime.listening.port
        context = await anonymous_context(runtime)
        idle = [await asyncio.open_connection("127.0.0.1", port, ssl=context) for _ in range(3)]
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for reader, writer in idle + silent:
            await closed_by_server(reader)
            writer.close()
        channel = Channel("127.0.0.1", port, ssl=context)
        try:
            fetched = await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
        finally:
            channel.close()
        assert fetched.trust_domain == "example.org"


async def test_tcp_connections_without_a_certificate_are_bounded_per_address(
    tmp_path: Path, discovery: Discovery
) -> None:
    tcp_limits = ConnectionLimits(max_connections=16, max_unverified_per_address=2)
    async with running(tmp_path, discovery, tcp_limits=tcp_limits) as runtime:
        assert runtime.listening is not None
        port = runtime.listening.port
        context = await anonymous_context(runtime)
        kept = [await asyncio.open_connection("127.0.0.1", port, ssl=context) for _ in range(2)]
        with pytest.raises((OSError, ssl.SSLError, asyncio.IncompleteReadError)):
            await asyncio.open_connection("127.0.0.1", port, ssl=context)
        for _, writer in kept:
            writer.close()


def test_the_default_limits_are_the_documented_ones() -> None:
    assert (
        ConnectionLimits(
            max_connections=16384,
            max_unverified_per_address=64,
            handshake_timeout=10.0,
            first_request_timeout=10.0,
            idle_timeout=300.0,
        )
        == SERVER_API_LIMITS
    )
    assert (
        ConnectionLimits(max_connections=256, first_request_timeout=10.0, idle_timeout=300.0)
        == ADMIN_API_LIMITS
    )
