"""A Workload API served in the test on a real unix socket (the unix attestor, a fake identity
source holding real certificates), and a way to run ``pyspire-agent`` command lines against it
in-process with captured streams."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig

from pyspire.agent.health import AgentHealthService
from pyspire.agent.identities import Snapshot
from pyspire.agent.readiness import AgentReadiness
from pyspire.agent.workload import WorkloadApiService, WorkloadAttestation, WorkloadEndpoint
from pyspire.catalog import Side
from pyspire.cli import CliContext, run_cli
from pyspire_sdk.model import X509Svid
from pyspire_sdk.testing import FakeClock, make_host_services

from .pki import AGENT_ID, FakeIdentitySource, Pki, make_entry


@dataclass(frozen=True)
class CliResult:
    """What one in-process command line produced."""

    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def run_agent_cli(*argv: str, environ: Mapping[str, str] | None = None) -> CliResult:
    """Run ``pyspire-agent <argv>`` in a worker thread (the CLI runs its own event loop)."""
    out, err = io.StringIO(), io.StringIO()
    context = CliContext(
        side=Side.AGENT,
        prog="pyspire-agent",
        stdout=out,
        stderr=err,
        environ=dict(environ or {}),
    )
    status = await asyncio.to_thread(run_cli, list(argv), context)
    return CliResult(status=status, out=out.getvalue(), err=err.getvalue())


@dataclass
class AgentSvid:
    """The agent's own SVID as its readiness checks see it; tests revoke or expire it."""

    svid: X509Svid
    revoked: bool = False
    revocation_reason: str = ""


@dataclass(frozen=True)
class Agent:
    """The Workload API under test: its socket, the identity source behind it, and the agent's
    own SVID its health answers from."""

    socket_path: Path
    source: FakeIdentitySource
    pki: Pki
    own: AgentSvid

    async def cli(self, *argv: str, environ: Mapping[str, str] | None = None) -> CliResult:
        """``pyspire-agent <argv> -socketPath <ours>``."""
        return await run_agent_cli(*argv, "-socketPath", str(self.socket_path), environ=environ)


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def clock() -> FakeClock:
    """Wall-clock time: the tokens must be valid for the real clock as well."""
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def source(pki: Pki, clock: FakeClock) -> FakeIdentitySource:
    return FakeIdentitySource(
        pki,
        clock,
        Snapshot(
            revision=1,
            identities=(pki.identity(make_entry("/workload")),),
            bundle=pki.bundle(),
            federated_bundles={},
        ),
    )


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory: unix socket paths are limited to 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="pyspire-api-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def agent(
    tmp_path: Path, socket_dir: Path, source: FakeIdentitySource, clock: FakeClock, pki: Pki
) -> AsyncIterator[Agent]:
    unix = UnixAttestor()
    await unix.configure(UnixAttestorConfig(), make_host_services(tmp_path, plugin_name="unix"))
    service = WorkloadApiService(source, WorkloadAttestation([("unix", unix)], timeout=5), clock)
    own = AgentSvid(svid=pki.ca.issue(AGENT_ID))
    # The agent's own readiness checks, over the test's SVID and identity source.
    readiness = AgentReadiness(clock)
    readiness.identity = own  # type: ignore[assignment]
    readiness.cache = source  # type: ignore[assignment]
    readiness.serving = True
    health = AgentHealthService(readiness.checks())
    endpoint = WorkloadEndpoint(
        socket_dir / "public" / "api.sock", service, health=health, drain_timeout=1
    )
    async with endpoint:
        yield Agent(socket_path=endpoint.socket_path, source=source, pki=pki, own=own)
