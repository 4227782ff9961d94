"""The quickstart's two workloads talk mutual TLS with identities from a real Workload API.

Two Workload API sockets are served in the test (the unix attestor, identity sources holding
real certificates from one CA): one gives the server process ``spiffe://example.org/server``,
the other gives the client process ``spiffe://example.org/client``. The example programs run
as subprocesses with the real py-spiffe client and the stdlib ``ssl`` module.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig

from pyspire.agent.identities import Identity, Snapshot
from pyspire.agent.workload import WorkloadApiService, WorkloadAttestation, WorkloadEndpoint
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock, make_host_services

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
TRUST_DOMAIN = TrustDomain("example.org")
SERVER_ID = "spiffe://example.org/server"
CLIENT_ID = "spiffe://example.org/client"
TIMEOUT = 60.0

pytestmark = pytest.mark.slow


def _usage(**enabled: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    return x509.KeyUsage(**{**flags, **enabled})


class Authority:
    """The trust domain's X.509 CA, issuing SVIDs shaped like the pyspire server's."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example.org")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier("spiffe://example.org")]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def bundle(self) -> Bundle:
        return Bundle(
            trust_domain=TRUST_DOMAIN,
            x509_authorities=(
                X509Authority(self.certificate.public_bytes(serialization.Encoding.DER)),
            ),
            sequence_number=1,
        )

    def identity(self, spiffe_id: str) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _usage(digital_signature=True, key_encipherment=True, key_agreement=True),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        entry = RegistrationEntry(
            spiffe_id=SpiffeId.parse(spiffe_id),
            parent_id=SpiffeId.parse("spiffe://example.org/spire/agent/test"),
            selectors=(Selector("unix", f"uid:{os.getuid()}"),),
            id=spiffe_id.rsplit("/", 1)[-1],
        )
        svid = X509Svid(
            spiffe_id=entry.spiffe_id,
            cert_chain=(certificate.public_bytes(serialization.Encoding.DER),),
            expires_at=now + timedelta(hours=1),
            private_key=key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return Identity(entry=entry, svid=svid)


class StaticIdentities:
    """An identity source that never changes: one snapshot, streamed until the caller leaves."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> Snapshot:
        return self._snapshot

    async def watch(self) -> AsyncIterator[Snapshot]:
        yield self._snapshot
        await asyncio.Event().wait()

    def demand(self, selectors: frozenset[Selector]) -> AbstractContextManager[None]:
        return nullcontext()

    async def fetch_jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        raise AssertionError("the quickstart workloads use X509-SVIDs only")


@dataclass(frozen=True)
class Sockets:
    server: Path
    client: Path


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="pyspire-qs-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def sockets(tmp_path: Path, socket_dir: Path) -> AsyncIterator[Sockets]:
    authority = Authority()
    unix = UnixAttestor()
    await unix.configure(UnixAttestorConfig(), make_host_services(tmp_path, plugin_name="unix"))
    attestation = WorkloadAttestation([("unix", unix)], timeout=5)
    clock = FakeClock(datetime.now(UTC))
    endpoints = []
    for name, spiffe_id in (("server", SERVER_ID), ("client", CLIENT_ID)):
        source = StaticIdentities(
            Snapshot(
                revision=1,
                identities=(authority.identity(spiffe_id),),
                bundle=authority.bundle(),
                federated_bundles={},
            )
        )
        service = WorkloadApiService(source, attestation, clock)
        endpoints.append(WorkloadEndpoint(socket_dir / name / "api.sock", service, drain_timeout=1))
    async with endpoints[0], endpoints[1]:
        yield Sockets(server=endpoints[0].socket_path, client=endpoints[1].socket_path)


@dataclass(frozen=True)
class Finished:
    status: int
    out: str
    err: str


async def start(program: str, socket_path: Path, *argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / program),
        *argv,
        env={**os.environ, "SPIFFE_ENDPOINT_SOCKET": f"unix://{socket_path}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process, already: str = "") -> Finished:
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Finished(process.returncode, already + out.decode(), err.decode())


async def listening_port(server: asyncio.subprocess.Process) -> tuple[int, str]:
    """Read the server's output up to the line naming its port."""
    assert server.stdout is not None
    seen = ""
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await server.stdout.readline()).decode()
            if not line:
                rest = await finish(server, seen)
                raise AssertionError(f"the server stopped early: {rest}")
            seen += line
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                return int(found.group(1)), seen


async def run_pair(
    sockets: Sockets, *, allow: str, expect_server: str
) -> tuple[Finished, Finished]:
    server = await start(
        "workload_server.py", sockets.server, "--allow", allow, "--count", "1", "--port", "0"
    )
    try:
        port, seen = await listening_port(server)
        client = await start(
            "workload_client.py",
            sockets.client,
            "--port",
            str(port),
            "--server-id",
            expect_server,
        )
        client_result = await finish(client)
        server_result = await finish(server, seen)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    return server_result, client_result


async def test_mutual_tls_exchange(sockets: Sockets) -> None:
    server, client = await run_pair(sockets, allow=CLIENT_ID, expect_server=SERVER_ID)
    assert client.status == 0, client.err
    assert f"client: my identity is {CLIENT_ID}" in client.out
    assert f"client: the server said: hello {CLIENT_ID}, this is {SERVER_ID}" in client.out
    assert server.status == 0, server.err
    assert f"server: my identity is {SERVER_ID}" in server.out
    assert f"server: answered {CLIENT_ID}" in server.out


async def test_client_refuses_an_unexpected_server(sockets: Sockets) -> None:
    server, client = await run_pair(
        sockets, allow=CLIENT_ID, expect_server="spiffe://example.org/someone-else"
    )
    assert client.status == 1
    assert (
        f"client: refused: the server is {SERVER_ID}, expected spiffe://example.org/someone-else"
        in client.err
    )
    assert "the server said" not in client.out
    # The server may already have written its answer when the client hangs up (the client
    # decides after the handshake): what matters is that the client never reads it.
    assert server.status == 0, server.err


async def test_server_refuses_an_unexpected_client(sockets: Sockets) -> None:
    server, client = await run_pair(
        sockets, allow="spiffe://example.org/someone-else", expect_server=SERVER_ID
    )
    assert f"server: refused {CLIENT_ID}: not an allowed client" in server.out
    assert "server: answered" not in server.out
    assert client.status == 1
    assert "client: refused: the server closed the connection without answering" in client.err
    assert "the server said" not in client.out
