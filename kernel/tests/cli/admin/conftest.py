"""A real server for the admin CLI tests: a ``ServerRuntime`` on a temporary directory with the
installed sqlite, disk and join_token plugins, TCP port 0 and its admin socket in a short
temporary directory (unix socket paths are limited to ~100 bytes)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel

from pyspire.catalog import Discovery, Side
from pyspire.cli import CliContext, run_cli
from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.proto.gen.spire.api import types as types_pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.server.runtime import ServerRuntime
from pyspire.transport.tls import build_client_context

TRUST_DOMAIN = "example.org"


@dataclass(frozen=True)
class CliResult:
    """What one in-process command line produced."""

    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass(frozen=True)
class AdminServer:
    """A running server and a way to run ``pyspire-server`` commands against it."""

    runtime: ServerRuntime
    socket_path: Path

    async def cli(self, *argv: str, stdin: str | None = None) -> CliResult:
        """Run ``pyspire-server <argv> -socketPath <ours>`` in a thread (the CLI runs its own
        event loop) with captured streams."""
        return await run_admin_cli([*argv, "-socketPath", str(self.socket_path)], stdin)

    async def attest_agent(self, token: str) -> types_pb.X509Svid:
        """Attest an agent with ``token`` over the TCP listener, as a real agent would."""
        listening = self.runtime.listening
        assert listening is not None
        admin = Channel(path=str(self.socket_path))
        try:
            bundle = await bundle_pb.BundleStub(admin).get_bundle(bundle_pb.GetBundleRequest())
        finally:
            admin.close()
        context = build_client_context([a.asn1 for a in bundle.x509_authorities])
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        request = agent_pb.AttestAgentRequest(
            params=agent_pb.AttestAgentRequestParams(
                data=types_pb.AttestationData(type="join_token", payload=token.encode()),
                params=agent_pb.AgentX509SvidParams(csr=csr),
            )
        )
        channel = Channel(listening.address, listening.port, ssl=context)
        try:
            responses = [
                response
                async for response in agent_pb.AgentStub(channel).attest_agent(
                    [request], timeout=30
                )
            ]
        finally:
            channel.close()
        return responses[-1].result.svid


def ca_pem(trust_domain: str) -> str:
    """A self-signed CA certificate of ``trust_domain`` as PEM: a federated trust anchor."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, trust_domain)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


async def run_admin_cli(argv: list[str], stdin: str | None = None) -> CliResult:
    """Run a ``pyspire-server`` command line in a worker thread with captured streams."""
    out, err = io.StringIO(), io.StringIO()
    context = CliContext(side=Side.SERVER, prog="pyspire-server", stdout=out, stderr=err)

    def call() -> int:
        if stdin is None:
            return run_cli(argv, context)
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            return run_cli(argv, context)
        finally:
            sys.stdin = saved

    status = await asyncio.to_thread(call)
    return CliResult(status=status, out=out.getvalue(), err=err.getvalue())


@pytest.fixture(scope="module")
def discovery() -> Discovery:
    return Discovery.load()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pyspire-cli-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def server(
    tmp_path: Path, socket_dir: Path, discovery: Discovery
) -> AsyncIterator[AdminServer]:
    socket_path = socket_dir / "admin" / "api.sock"
    document = {
        "server": {
            "trust_domain": TRUST_DOMAIN,
            "data_dir": str(tmp_path / "data"),
            "bind_address": "127.0.0.1",
            "bind_port": 0,
            "socket_path": str(socket_path),
            "plugins": {
                "datastore": {"sqlite": {}},
                "key_manager": {"disk": {}},
                "node_attestor": {"join_token": {}},
            },
        }
    }
    runtime = ServerRuntime(load_document(SERVER_SCHEMA, document), discovery)
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "the server did not become ready"
    try:
        yield AdminServer(runtime=runtime, socket_path=socket_path)
    finally:
        ready.cancel()
        runtime.stop()
        await asyncio.wait_for(task, timeout=30)
