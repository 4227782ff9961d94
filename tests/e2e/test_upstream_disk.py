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
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
)
from upstream_pki import UpstreamPki, openssl_verify

pytestmark = pytest.mark.slow

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/upstream/workload"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
PEM = serialization.Encoding.PEM
TIMEOUT = 30.0


class UpstreamFiles(UpstreamPki):
    """The upstream PKI as the disk plugin reads it."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        directory.mkdir()
        self.cert = directory / "upstream.crt"
        self.key = directory / "upstream.key"
        self.bundle = directory / "roots.crt"
        self.cert.write_bytes(self.cert_pem)
        self.key.touch(mode=0o600)
        self.key.chmod(0o600)
        self.key.write_bytes(self.key_pem)
        self.bundle.write_bytes(self.bundle_pem)

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

    verified = openssl_verify(tmp_path, leaf, chain[1:], [upstream.root[0]])
    if verified is None:
        pytest.skip("openssl is not installed: the chain was checked above, not by openssl")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")
    # Without the upstream intermediates the chain does not reach the root.
    short = openssl_verify(tmp_path, leaf, [server_ca], [upstream.root[0]])
    assert short is not None
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
