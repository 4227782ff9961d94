"""x509pop, sshpop and http_challenge between a real ``pyspire-server`` and real agents: each
agent attests with its attestor, a workload gets its SVID through py-spiffe, and the server's
``agent show`` lists the agent with its attestation type and selectors. A node whose evidence
does not hold is refused with the reason in both logs, and no agent record is made.

One server, configured with all three attestors, serves the module; each test starts its own
agent. Certificates are made here with ``cryptography``, valid around the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from processes import (
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    ServerProcess,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
    wait_for,
)

pytestmark = pytest.mark.slow

CALLER_SELECTOR = f"unix:uid:{os.getuid()}"
REFUSAL_TIMEOUT = 45.0
"""A refused agent exits at once; before that it may be told to come back later (the server's
one-attestation-per-second allowance for its address, spent by the agent just before it), and
retries with jitter of up to 10 s, which a loaded machine stretches."""


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@dataclass(frozen=True)
class Material:
    """What the server trusts, and what the test's nodes hold, as files under ``root``."""

    root: Path
    x509_ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
    ssh_ca: ed25519.Ed25519PrivateKey

    @classmethod
    def make(cls, root: Path) -> Material:
        key = ec.generate_private_key(ec.SECP256R1())
        material = cls(
            root=root,
            x509_ca=(_certificate("nodes-ca", key, None, ca=True), key),
            ssh_ca=ed25519.Ed25519PrivateKey.generate(),
        )
        (root / "x509-ca.pem").write_bytes(_pem(material.x509_ca[0]))
        return material

    def ssh_ca_line(self) -> str:
        return (
            self.ssh_ca.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )

    def server_tables(self) -> str:
        return f"""
[server.plugins.node_attestor.x509pop]
ca_bundle_path = "{self.root / "x509-ca.pem"}"
verify_client_ip = true

[server.plugins.node_attestor.sshpop]
cert_authorities = ["{self.ssh_ca_line()}"]
canonical_domain = "example.org"

[server.plugins.node_attestor.http_challenge]
allowed_dns_patterns = ['^127\\.0\\.0\\.[12]$']
"""

    def x509_node(
        self, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
    ) -> tuple[str, x509.Certificate]:
        """Node files for ``name``; the agent's table and its certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(
            name,
            key,
            issuer or self.x509_ca,
            ca=False,
            names=[
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.UniformResourceIdentifier(f"x509pop://{TRUST_DOMAIN}/datacenter/dc1"),
            ],
        )
        (self.root / f"{name}.key").write_bytes(_key_pem(key))
        (self.root / f"{name}.pem").write_bytes(_pem(certificate))
        table = f"""[agent.plugins.node_attestor.x509pop]
private_key_path = "{self.root / f"{name}.key"}"
certificate_path = "{self.root / f"{name}.pem"}"
"""
        return table, certificate

    def ssh_node(self, name: str) -> tuple[str, bytes]:
        """Node files for ``name``; the agent's table and the certificate's wire form."""
        key = ed25519.Ed25519PrivateKey.generate()
        now = datetime.now(UTC)
        certificate = (
            serialization.SSHCertificateBuilder()
            .public_key(key.public_key())
            .serial(1)
            .type(serialization.SSHCertificateType.HOST)
            .key_id(name.encode())
            .valid_principals([f"{name}.example.org".encode()])
            .valid_after(int((now - timedelta(minutes=5)).timestamp()))
            .valid_before(int((now + timedelta(hours=1)).timestamp()))
            .sign(self.ssh_ca)
        )
        key_path, cert_path = self.root / name, self.root / f"{name}-cert.pub"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(certificate.public_bytes() + b"\n")
        table = f"""[agent.plugins.node_attestor.sshpop]
host_key_path = "{key_path}"
host_cert_path = "{cert_path}"
"""
        return table, base64.b64decode(certificate.public_bytes().split()[1])


@dataclass(frozen=True)
class Fixture:
    root: Path
    server: ServerProcess
    material: Material
    bootstrap: Path


@pytest.fixture(scope="module")
def deployed() -> Iterator[Fixture]:
    root = short_temp_dir()
    (root / "nodes").mkdir()
    material = Material.make(root / "nodes")
    server = ServerProcess(
        ServerSettings(root=root, port=free_port(), extra_plugins=material.server_tables())
    )
    try:
        server.start()
        bootstrap = server.write_bundle(root / "bootstrap.pem")
        yield Fixture(root=root, server=server, material=material, bootstrap=bootstrap)
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)


def agent_for(deployed: Fixture, name: str, table: str) -> AgentProcess:
    return AgentProcess(
        AgentSettings(
            root=deployed.root,
            server_port=deployed.server.settings.port,
            bootstrap_bundle=deployed.bootstrap,
            name=name,
            node_attestor=table,
        )
    )


def attest_and_serve(deployed: Fixture, name: str, table: str, agent_id: str) -> str:
    """Start an agent with ``table``; a workload of this uid registered under ``agent_id``
    gets its SVID through py-spiffe. Returns ``agent show`` for the agent."""
    workload = f"spiffe://{TRUST_DOMAIN}/{name}/workload"
    deployed.server.create_entry(workload, agent_id, CALLER_SELECTOR)
    agent = agent_for(deployed, name, table)
    try:
        agent.start()
        assert run_workload(agent.endpoint, "ids")["spiffe_ids"] == [workload]
        return deployed.server.cli("agent", "show", "-spiffeID", agent_id).stdout
    finally:
        agent.kill()


def test_x509pop_agent_attests_and_serves_a_workload(deployed: Fixture) -> None:
    table, certificate = deployed.material.x509_node("x509-node")
    der = certificate.public_bytes(serialization.Encoding.DER)
    agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/x509pop/{hashlib.sha1(der).hexdigest()}"  # noqa: S324

    shown = attest_and_serve(deployed, "x509-node", table, agent_id)

    assert agent_id in shown
    assert "x509pop" in shown
    ca_der = deployed.material.x509_ca[0].public_bytes(serialization.Encoding.DER)
    for selector in (
        "x509pop:subject:cn:x509-node",
        f"x509pop:ca:fingerprint:{hashlib.sha1(ca_der).hexdigest()}",  # noqa: S324
        "x509pop:san:datacenter:dc1",
        "x509pop:serialnumber:",
    ):
        assert selector in shown, f"{selector} missing from:\n{shown}"


def test_sshpop_agent_attests_and_serves_a_workload(deployed: Fixture) -> None:
    table, blob = deployed.material.ssh_node("ssh-node")
    fingerprint = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
    agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/sshpop/{fingerprint}"

    shown = attest_and_serve(deployed, "ssh-node", table, agent_id)

    assert agent_id in shown
    assert "sshpop" in shown


def test_http_challenge_agent_attests_and_serves_a_workload(deployed: Fixture) -> None:
    table = '[agent.plugins.node_attestor.http_challenge]\nhostname = "127.0.0.1"\n'
    agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/http_challenge/127.0.0.1"

    shown = attest_and_serve(deployed, "http-node", table, agent_id)

    assert agent_id in shown
    assert "http_challenge:hostname:127.0.0.1" in shown


def test_http_challenge_trusts_a_host_name_on_first_use_only(deployed: Fixture) -> None:
    """A second agent claiming an attested host name is refused, as SPIRE's TOFU refuses it."""
    table = '[agent.plugins.node_attestor.http_challenge]\nhostname = "127.0.0.2"\n'
    first = agent_for(deployed, "tofu-first", table)
    try:
        first.start()
    finally:
        first.kill()
    second = agent_for(deployed, "tofu-second", table)
    try:
        second.launch()
        assert second.wait(REFUSAL_TIMEOUT) != 0
        assert "attestation data has already been used to attest an agent" in second.log()
    finally:
        second.kill()


def test_a_refused_node_is_told_why_and_leaves_no_agent_record(deployed: Fixture) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    stranger = (_certificate("stranger-ca", key, None, ca=True), key)
    table, certificate = deployed.material.x509_node("stray-node", issuer=stranger)
    der = certificate.public_bytes(serialization.Encoding.DER)
    agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/x509pop/{hashlib.sha1(der).hexdigest()}"  # noqa: S324
    agent = agent_for(deployed, "stray-node", table)
    reason = "does not chain to a trusted CA"
    try:
        agent.launch()
        code = agent.wait(REFUSAL_TIMEOUT)
        assert code != 0
        assert reason in agent.log()
        wait_for(
            "the refusal in the server's log",
            lambda: True if reason in deployed.server.log() else None,
            REFUSAL_TIMEOUT,
            deployed.server.log(),
        )
        assert agent_id not in deployed.server.agent_ids()
    finally:
        agent.kill()
