"""The Workload API socket is the agent's alone, and its connections stay bounded.

Limits are passed short so that waits end in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from grpclib.client import Channel

from pyspire.agent.workload import WorkloadApiService, WorkloadEndpoint
from pyspire.proto.gen import workload as pb
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.unix import SocketPathError
from pyspire_sdk.errors import InvalidArgumentError

from .conftest import HEADER
from .helpers import FakeIdentitySource, Pki

OTHER_UID = 65534
SHORT = 0.2
WAIT = 5.0
REFUSED_CONNECTIONS = 10_000


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - connection counts have no event to wait on
            await asyncio.sleep(0.01)


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    async with asyncio.timeout(WAIT):
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
async def test_a_directory_another_user_made_first_is_refused_and_left_alone(
    service: WorkloadApiService, socket_dir: Path
) -> None:
    """Another local user made the directory (0777) and put a socket of theirs in it: the
    agent must neither serve there nor remove what is there."""
    planted = socket_dir / "public"
    planted.mkdir()
    os.chown(planted, OTHER_UID, OTHER_UID)
    planted.chmod(0o777)
    theirs = planted / "api.sock"
    with socket.socket(socket.AF_UNIX) as impostor:
        impostor.bind(str(theirs))
        endpoint = WorkloadEndpoint(theirs, service)
        with pytest.raises(SocketPathError, match="belongs to uid 65534"):
            await endpoint.start()
        await endpoint.close()
        assert theirs.is_socket()


async def test_a_connection_without_a_call_is_closed(
    service: WorkloadApiService, socket_dir: Path
) -> None:
    limits = ConnectionLimits(max_connections=8, first_request_timeout=SHORT)
    async with WorkloadEndpoint(socket_dir / "api.sock", service, limits=limits) as endpoint:
        reader, writer = await asyncio.open_unix_connection(str(endpoint.socket_path))
        await until(lambda: endpoint.open_connections == 1)
        await closed_by_server(reader)
        writer.close()
        await until(lambda: endpoint.open_connections == 0)


async def test_an_open_stream_is_not_idle(
    service: WorkloadApiService, socket_dir: Path, source: FakeIdentitySource, pki: Pki
) -> None:
    """FetchX509SVID streams last for hours without a byte either way: never idle."""
    limits = ConnectionLimits(max_connections=8, first_request_timeout=SHORT, idle_timeout=SHORT)
    async with WorkloadEndpoint(socket_dir / "api.sock", service, limits=limits) as endpoint:
        channel = Channel(path=str(endpoint.socket_path))
        try:
            stub = pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)
            stream = stub.fetch_x509_svid(pb.X509SvidRequest())
            async with asyncio.timeout(WAIT):
                first = await anext(stream)
            await asyncio.sleep(SHORT * 3)  # longer than both timeouts
            rotated = pki.identity(source.snapshot().identities[0].entry)
            source.publish(identities=(rotated,))
            async with asyncio.timeout(WAIT):
                second = await anext(stream)
            assert second.svids[0].x509_svid != first.svids[0].x509_svid
            assert endpoint.open_connections == 1
        finally:
            channel.close()


async def test_refused_connections_leave_no_descriptor_behind(
    service: WorkloadApiService, socket_dir: Path
) -> None:
    """10,000 connections over the bound are closed as they come; the agent's descriptors
    return to where they were."""
    limits = ConnectionLimits(max_connections=4, first_request_timeout=60.0)
    baseline = open_descriptors()
    async with WorkloadEndpoint(socket_dir / "api.sock", service, limits=limits) as endpoint:
        path = str(endpoint.socket_path)
        held = [await asyncio.open_unix_connection(path) for _ in range(4)]
        await until(lambda: endpoint.open_connections == 4)
        with_held = open_descriptors()

        loop = asyncio.get_running_loop()

        async def refused() -> None:
            with socket.socket(socket.AF_UNIX) as client:
                client.setblocking(False)
                await loop.sock_connect(client, path)
                with contextlib.suppress(OSError):
                    async with asyncio.timeout(WAIT):
                        while await loop.sock_recv(client, 1024):
                            pass

        for _ in range(REFUSED_CONNECTIONS // 100):
            await asyncio.gather(*(refused() for _ in range(100)))
        assert endpoint.open_connections == 4
        assert open_descriptors() == with_held
        for _, writer in held:
            writer.close()
        await until(lambda: endpoint.open_connections == 0)
    assert open_descriptors() == baseline


def test_limits_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="max_connections: must be greater than zero"):
        ConnectionLimits(max_connections=0)
