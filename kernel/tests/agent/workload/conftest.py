"""A Workload API on a real unix socket: the unix attestor, a fake identity source holding
real certificates and keys, and grpclib clients that send (or forget) the security header."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from grpclib.client import Channel
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig

from pyspire.agent.identities import Snapshot
from pyspire.agent.workload import WorkloadApiService, WorkloadAttestation, WorkloadEndpoint
from pyspire.proto.gen import workload as pb
from pyspire_sdk.testing import FakeClock, make_host_services

from .helpers import FakeIdentitySource, Pki, make_entry

HEADER = {"workload.spiffe.io": "true"}


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def clock() -> FakeClock:
    """Real time at the start: py-spiffe checks JWT expiry against the wall clock."""
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def source(pki: Pki, clock: FakeClock) -> FakeIdentitySource:
    entry = make_entry("/workload", entry_id="entry-1")
    return FakeIdentitySource(
        pki,
        clock,
        Snapshot(
            revision=1,
            identities=(pki.identity(entry),),
            bundle=pki.bundle(),
            federated_bundles={},
        ),
    )


@pytest.fixture
async def attestation(tmp_path: Path) -> WorkloadAttestation:
    unix = UnixAttestor()
    await unix.configure(UnixAttestorConfig(), make_host_services(tmp_path, plugin_name="unix"))
    return WorkloadAttestation([("unix", unix)], timeout=5)


@pytest.fixture
def service(
    source: FakeIdentitySource, attestation: WorkloadAttestation, clock: FakeClock
) -> WorkloadApiService:
    return WorkloadApiService(source, attestation, clock)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory: unix socket paths are limited to 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="pyspire-wl-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def endpoint(
    service: WorkloadApiService, socket_dir: Path
) -> AsyncIterator[WorkloadEndpoint]:
    endpoint = WorkloadEndpoint(socket_dir / "public" / "api.sock", service, drain_timeout=2)
    async with endpoint:
        yield endpoint


@pytest.fixture
async def channel(endpoint: WorkloadEndpoint) -> AsyncIterator[Channel]:
    channel = Channel(path=str(endpoint.socket_path))
    yield channel
    channel.close()


@pytest.fixture
def stub(channel: Channel) -> pb.SpiffeWorkloadApiStub:
    return pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)


@pytest.fixture
def bare_stub(channel: Channel) -> pb.SpiffeWorkloadApiStub:
    """A client that forgets the security header."""
    return pb.SpiffeWorkloadApiStub(channel)
