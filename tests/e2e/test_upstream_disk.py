"""A real ``pyspire-server`` whose CA is signed by the ``disk`` upstream authority, a real agent,
and workloads using py-spiffe.

The upstream PKI (root → intermediate → signing CA, made here with ``cryptography`` around the
wall clock) lives in files. What must hold: the trust bundle the server gives out and the one
a workload gets hold the upstream root and not the server's CA; an X509-SVID's chain is the
SVID, the server's CA and the upstream intermediates, and the system's ``openssl verify``
accepts it against the root alone (no ``-partial_chain``); two workloads do mutual TLS with
these SVIDs (the quickstart's workload programs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
)

pytestmark = pytest.mark.slow

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/upstream/workload"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
PEM = serialization.Encoding.PEM
TIMEOUT = 30.0

Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _ca(name: str, issuer: Issuer | None, ttl: timedelta) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


class UpstreamFiles:
    """The upstream PKI as the disk plugin reads it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.root = _ca("upstream root", None, timedelta(days=3650))
        self.intermediate = _ca("upstream intermediate", self.root, timedelta(days=365))
        self.signer = _ca("upstream signer", self.intermediate, timedelta(days=30))
        self.cert = directory / "upstream.crt"
        self.key = directory / "upstream.key"
        self.bundle = directory / "roots.crt"
        self.cert.write_bytes(
            self.signer[0].public_bytes(PEM) + self.intermediate[0].public_bytes(PEM)
        )
        self.key.touch(mode=0o600)
        self.key.chmod(0o600)
        self.key.write_bytes(
            self.signer[1].private_bytes(
                PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.bundle.write_bytes(self.root[0].public_bytes(PEM))

    def table(self) -> str:
        return f"""
[server.plugins.upstream_authority.disk]
cert_file_path = "{self.cert}"
key_file_path = "{self.key}"
bundle_file_path = "{self.bundle}"
"""


class Deployed:
    def __init__(self, deployment: Deployment, upstream: UpstreamFiles) -> None:
        self.deployment = deployment
        self.upstream = upstream


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    root = short_temp_dir()
    upstream = UpstreamFiles(root / "upstream")
    port = free_port()
    deployment = Deployment.start(
        ServerSettings(root=root, port=port, extra_plugins=upstream.table()),
        AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
        entries=[(WORKLOAD, [f"unix:uid:{os.getuid()}"])],
    )
    try:
        yield Deployed(deployment, upstream)
    finally:
        deployment.stop()


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_the_bundle_holds_the_upstream_root_not_the_server_ca(deployed: Deployed) -> None:
    root = deployed.deployment.root
    bootstrap = _certificates(root / "bootstrap.pem")
    assert bootstrap == [deployed.upstream.root[0]]


def test_svid_chain_verifies_against_the_upstream_root_with_openssl(
    deployed: Deployed, tmp_path: Path
) -> None:
    tmp_path.chmod(0o755)
    answer = run_workload(deployed.deployment.agent.endpoint, "x509", str(tmp_path))
    assert answer["spiffe_id"] == WORKLOAD
    chain = _certificates(tmp_path / "svid.pem")
    bundle = _certificates(tmp_path / "bundle.pem")
    upstream = deployed.upstream

    assert bundle == [upstream.root[0]]
    assert len(chain) == 4
    leaf, server_ca, signer, intermediate = chain
    assert (signer, intermediate) == (upstream.signer[0], upstream.intermediate[0])
    assert server_ca.issuer == signer.subject
    assert leaf.issuer == server_ca.subject
    constraints = server_ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length is None

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: the chain was checked above, not by openssl")
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(PEM))
    (tmp_path / "chain.pem").write_bytes(b"".join(c.public_bytes(PEM) for c in chain[1:]))
    (tmp_path / "roots.pem").write_bytes(upstream.root[0].public_bytes(PEM))
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(tmp_path / "roots.pem"),
            "-untrusted",
            str(tmp_path / "chain.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    # Without the upstream intermediates the chain does not reach the root.
    (tmp_path / "short.pem").write_bytes(server_ca.public_bytes(PEM))
    short = subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(tmp_path / "roots.pem"),
            "-untrusted",
            str(tmp_path / "short.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert short.returncode != 0


def _start(program: str, endpoint: str, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / program), *argv],
        env={**os.environ, "SPIFFE_ENDPOINT_SOCKET": endpoint},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_workloads_do_mutual_tls_with_upstream_chained_svids(deployed: Deployed) -> None:
    endpoint = deployed.deployment.agent.endpoint
    server = _start("workload_server.py", endpoint, "--allow", WORKLOAD, "--count", "1")
    try:
        assert server.stdout is not None
        seen = ""
        port = None
        while port is None:
            line = server.stdout.readline()
            if not line:
                raise AssertionError(f"the workload server stopped: {seen}{server.stderr.read()}")  # type: ignore[union-attr]
            seen += line
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        client = _start(
            "workload_client.py", endpoint, "--port", str(port), "--server-id", WORKLOAD
        )
        out, err = client.communicate(timeout=TIMEOUT)
        assert client.returncode == 0, out + err
        assert f"client: the server said: hello {WORKLOAD}, this is {WORKLOAD}" in out
        rest, _ = server.communicate(timeout=TIMEOUT)
        assert f"server: answered {WORKLOAD}" in seen + rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
