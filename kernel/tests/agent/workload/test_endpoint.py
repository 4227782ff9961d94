"""The Workload API socket: modes, stale sockets, the caller's pid, and a clean shutdown."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.workload import WorkloadApiService, WorkloadAttestation, WorkloadEndpoint
from pyspire.proto.gen import workload as pb
from pyspire.transport.unix import SocketPathError
from pyspire_sdk.testing import FakeClock

from .conftest import HEADER
from .helpers import UID_SELECTOR, FakeIdentitySource, opened
from .test_attestation import StaticAttestor

TIMEOUT = 5.0


async def test_socket_and_directory_modes(endpoint: WorkloadEndpoint) -> None:
    assert stat.S_ISSOCK(endpoint.socket_path.lstat().st_mode)
    assert stat.S_IMODE(endpoint.socket_path.stat().st_mode) == 0o777
    assert stat.S_IMODE(endpoint.socket_path.parent.stat().st_mode) == 0o755


async def test_close_removes_the_socket_and_is_idempotent(
    service: WorkloadApiService, socket_dir: Path
) -> None:
    endpoint = WorkloadEndpoint(socket_dir / "api.sock", service)
    await endpoint.start()
    assert endpoint.socket_path.exists()
    await endpoint.close()
    assert not endpoint.socket_path.exists()
    await endpoint.close()


async def test_a_stale_socket_is_replaced_and_a_file_is_refused(
    service: WorkloadApiService, socket_dir: Path
) -> None:
    stale = socket_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as leftover:
        leftover.bind(str(stale))
    async with WorkloadEndpoint(stale, service) as endpoint:
        channel = Channel(path=str(endpoint.socket_path))
        try:
            stub = pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)
            response = await stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["a"]))
            assert len(response.svids) == 1
        finally:
            channel.close()

    regular = socket_dir / "file.sock"
    regular.write_text("not a socket")
    with pytest.raises(SocketPathError, match="exists and is not a socket"):
        await WorkloadEndpoint(regular, service).start()
    assert regular.read_text() == "not a socket"


async def test_shutdown_ends_open_streams_with_unavailable(
    service: WorkloadApiService, socket_dir: Path, source: FakeIdentitySource
) -> None:
    endpoint = WorkloadEndpoint(socket_dir / "api.sock", service)
    await endpoint.start()
    channel = Channel(path=str(endpoint.socket_path))
    try:
        stub = pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)
        streams = [
            stub.fetch_x509_svid(pb.X509SvidRequest()),
            stub.fetch_x509_bundles(pb.X509BundlesRequest()),
            stub.fetch_jwt_bundles(pb.JwtBundlesRequest()),
        ]
        for stream in streams:
            async with asyncio.timeout(TIMEOUT):
                await anext(stream)
        assert endpoint.in_flight == 3
        assert source.watchers == 3
        closing = asyncio.create_task(endpoint.close())
        for stream in streams:
            with pytest.raises(GRPCError) as raised:
                async with asyncio.timeout(TIMEOUT):
                    await anext(stream)
            assert raised.value.status == Status.UNAVAILABLE
            assert raised.value.message == "workload api is shutting down"
        await closing
        assert source.watchers == 0
        assert not endpoint.socket_path.exists()
    finally:
        channel.close()


async def test_a_client_going_away_releases_its_stream(
    stub: pb.SpiffeWorkloadApiStub, endpoint: WorkloadEndpoint, source: FakeIdentitySource
) -> None:
    async with opened(stub.fetch_x509_svid(pb.X509SvidRequest())) as stream:
        await anext(stream)
        assert source.watchers == 1
    async with asyncio.timeout(TIMEOUT):
        await source.wait_for_watchers(0)


_CLIENT = """
import sys
from spiffe import WorkloadApiClient
client = WorkloadApiClient(socket_path=sys.argv[1], default_timeout=5)
print(client.fetch_jwt_svid({"svc"}).spiffe_id)
client.close()
"""


async def test_the_callers_pid_comes_from_the_socket(
    source: FakeIdentitySource, clock: FakeClock, socket_dir: Path
) -> None:
    recorder = StaticAttestor(UID_SELECTOR.value)
    service = WorkloadApiService(source, WorkloadAttestation([("unix", recorder)]), clock)
    async with WorkloadEndpoint(socket_dir / "api.sock", service) as endpoint:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CLIENT,
            f"unix://{endpoint.socket_path}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == "spiffe://example.org/workload"
    assert recorder.pids == [process.pid]
    assert process.pid != os.getpid()
