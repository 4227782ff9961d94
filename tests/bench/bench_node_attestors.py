"""Benchmark of agent attestation with x509pop, sshpop and http_challenge against join_token,
measured in the same run against one real server.

Run from the repository root: ``.venv/bin/python tests/bench/bench_node_attestors.py`` (100
agents per attestor by default; ``--agents`` to change it).

A real ``pyspire-server`` is configured with all four attestors. Each agent is played in this
process by the attestor's own agent half (configured as an agent configures it, with its own
key and certificate, token or host name) driving AttestAgent over a fresh TLS connection of its
own, from a loopback address of its own (the server admits one attestation per second per
address). One sample is one agent's whole attestation: connecting, the TLS handshake, the
payload, every challenge and answer (for http_challenge, the server's HTTP fetch from the
agent's listener), until the agent SVID arrives. Agents take turns across attestors (agent 1 of
each, then agent 2 of each, ...) so load on the shared machine falls on all alike.

Prints p50, p99 and the mean per attestor, and each attestor's p50 and p99 as a ratio to
join_token's (the floor: one token lookup and no challenge). Nothing is asserted: benchmarks
print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import betterproto
import grpclib.const
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from channels import SourceBoundChannel, anonymous_context
from processes import ProcessError, ServerProcess, ServerSettings, free_port, short_temp_dir
from pyspire_nodeattestor_http_challenge import (
    AgentHttpChallengeAttestor,
    HttpChallengeAgentConfig,
)
from pyspire_nodeattestor_join_token import AgentJoinTokenAttestor, AgentJoinTokenConfig
from pyspire_nodeattestor_sshpop import AgentSshPopAttestor, SshPopAgentConfig
from pyspire_nodeattestor_x509pop import AgentX509PopAttestor, X509PopAgentConfig

from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, agent_attestation
from pyspire_sdk.testing.host import make_host_services

ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"
CALL_TIMEOUT = 30.0
ATTESTORS = ("join_token", "x509pop", "sshpop", "http_challenge")
WARM_UP = 1
"""Agents per attestor attested first and not counted: the first attestation of a process
imports what the attestor needs (aiohttp for http_challenge) and opens its connections."""


def _x509_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench nodes CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _x509_node(
    directory: Path, number: int, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> X509PopAgentConfig:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"node-{number}")]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .sign(ca[1], hashes.SHA256())
    )
    key_path, cert_path = directory / f"x509-{number}.key", directory / f"x509-{number}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return X509PopAgentConfig(private_key_path=key_path, certificate_path=cert_path)


def _ssh_node(directory: Path, number: int, ca: ed25519.Ed25519PrivateKey) -> SshPopAgentConfig:
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.now(UTC)
    certificate = (
        serialization.SSHCertificateBuilder()
        .public_key(key.public_key())
        .serial(number)
        .type(serialization.SSHCertificateType.HOST)
        .key_id(f"node-{number}".encode())
        .valid_principals([f"node-{number}.example.org".encode()])
        .valid_after(int((now - timedelta(minutes=5)).timestamp()))
        .valid_before(int((now + timedelta(hours=1)).timestamp()))
        .sign(ca)
    )
    key_path, cert_path = directory / f"ssh-{number}", directory / f"ssh-{number}-cert.pub"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes() + b"\n")
    return SshPopAgentConfig(host_key_path=key_path, host_cert_path=cert_path)


def _address(attestor: int, number: int) -> str:
    """Agent ``number`` of attestor ``attestor``: its own loopback address."""
    return str(ipaddress.IPv4Address("127.64.0.0") + attestor * 4096 + number + 1)


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def _attest(port: int, source: str, name: str, agent: AgentNodeAttestor, csr: bytes) -> float:
    """One agent's whole attestation, timed; raises when the server does not admit it."""
    channel = SourceBoundChannel(source, "127.0.0.1", port, anonymous_context())
    started = time.perf_counter()
    try:
        async with agent_attestation(agent):
            payload = await agent.attestation_payload()
            async with channel.request(
                ATTEST_AGENT,
                grpclib.const.Cardinality.STREAM_STREAM,
                agent_pb.AttestAgentRequest,
                agent_pb.AttestAgentResponse,
                timeout=CALL_TIMEOUT,
            ) as stream:
                await stream.send_message(
                    agent_pb.AttestAgentRequest(
                        params=agent_pb.AttestAgentRequestParams(
                            data=pb.AttestationData(type=name, payload=payload),
                            params=agent_pb.AgentX509SvidParams(csr=csr),
                        )
                    )
                )
                while True:
                    response = await stream.recv_message()
                    if response is None:
                        raise ProcessError(f"{name}: the server ended AttestAgent early")
                    step, _ = betterproto.which_one_of(response, "step")
                    if step != "challenge":
                        break
                    answer = await agent.answer_challenge(response.challenge)
                    await stream.send_message(
                        agent_pb.AttestAgentRequest(challenge_response=answer)
                    )
                await stream.end()
                await stream.recv_trailing_metadata()
        if not response.result.svid.cert_chain:
            raise ProcessError(f"{name}: no agent SVID in the result")
        return time.perf_counter() - started
    finally:
        channel.close()


async def _agents(
    root: Path, agents: int, tokens: Sequence[str], ca: Any, ssh_ca: Any
) -> dict[str, list[AgentNodeAttestor]]:
    """Every agent half, configured as an agent configures it."""
    host = make_host_services(root)
    made: dict[str, list[AgentNodeAttestor]] = {name: [] for name in ATTESTORS}
    for number in range(agents):
        builders: list[tuple[str, AgentNodeAttestor, Any]] = [
            ("join_token", AgentJoinTokenAttestor(), AgentJoinTokenConfig(token=tokens[number])),
            ("x509pop", AgentX509PopAttestor(), _x509_node(root, number, ca)),
            ("sshpop", AgentSshPopAttestor(), _ssh_node(root, number, ssh_ca)),
            (
                "http_challenge",
                AgentHttpChallengeAttestor(),
                HttpChallengeAgentConfig(hostname=_address(3, number)),
            ),
        ]
        for name, attestor, config in builders:
            await attestor.configure(config, host)
            made[name].append(attestor)
    return made


def _percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _measure(port: int, agents: dict[str, list[AgentNodeAttestor]]) -> dict[str, list[float]]:
    csr = _csr()
    samples: dict[str, list[float]] = {name: [] for name in ATTESTORS}
    count = len(agents[ATTESTORS[0]])
    for number in range(count):
        for index, name in enumerate(ATTESTORS):
            source = _address(index, number)
            elapsed = await _attest(port, source, name, agents[name][number], csr)
            if number >= WARM_UP:
                samples[name].append(elapsed)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=100, help="agents per attestor")
    args = parser.parse_args(argv)

    root = short_temp_dir()
    nodes = root / "nodes"
    nodes.mkdir()
    ca = _x509_ca()
    (nodes / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    ssh_ca = ed25519.Ed25519PrivateKey.generate()
    ssh_ca_line = ssh_ca.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    tables = f"""
[server.plugins.node_attestor.x509pop]
ca_bundle_path = "{nodes / "ca.pem"}"

[server.plugins.node_attestor.sshpop]
cert_authorities = ["{ssh_ca_line.decode()}"]

[server.plugins.node_attestor.http_challenge]
"""
    server = ServerProcess(
        ServerSettings(root=root, port=free_port(), log_level="WARN", extra_plugins=tables)
    )
    try:
        server.start()
        total = args.agents + WARM_UP
        tokens = _tokens(server, total)
        agents = asyncio.run(_agents(nodes, total, tokens, ca, ssh_ca))
        samples = asyncio.run(_measure(server.settings.port, agents))
        server.terminate()
    except ProcessError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)

    floor_p50 = _percentile(samples["join_token"], 0.5)
    floor_p99 = _percentile(samples["join_token"], 0.99)
    print(
        f"{args.agents} agents per attestor (after {WARM_UP} not counted), one attestation "
        "each, against one server (ms)"
    )
    print(f"{'attestor':16} {'p50':>8} {'p99':>8} {'mean':>8} {'p50 ratio':>10} {'p99 ratio':>10}")
    for name in ATTESTORS:
        p50 = _percentile(samples[name], 0.5)
        p99 = _percentile(samples[name], 0.99)
        mean = statistics.fmean(samples[name])
        print(
            f"{name:16} {p50 * 1000:8.1f} {p99 * 1000:8.1f} {mean * 1000:8.1f} "
            f"{p50 / floor_p50:9.2f}x {p99 / floor_p99:9.2f}x"
        )
    print("floor: join_token (ratios are to its p50 and p99 in this run)")
    return 0


def _tokens(server: ServerProcess, count: int) -> list[str]:
    """``count`` join tokens, made over one admin connection."""

    async def create(client: Any) -> list[str]:
        made = []
        for _ in range(count):
            token = await client.agent.create_join_token(agent_pb.CreateJoinTokenRequest(ttl=3600))
            made.append(str(token.value))
        return made

    return server.api(create)


if __name__ == "__main__":
    sys.exit(main())
