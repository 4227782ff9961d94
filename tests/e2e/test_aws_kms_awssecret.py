"""A real ``pyspire-server`` keeping its keys in AWS KMS (the ``aws_kms`` key manager) with its
CA signed by the ``awssecret`` upstream authority, both against one moto server, a real agent,
and a workload using py-spiffe.

moto's server (unpatched) runs in the test process; the server sends KMS each message to sign
whole, and verifies every signature KMS returns. What must hold: the server's CA key and the
SVIDs it signs come from KMS, the workload's chain is the SVID, the server's CA and the upstream
intermediates, and the system's ``openssl verify`` accepts it against the bundle's roots alone.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
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

from pyspire_sdk.testing.aws import MotoServer

pytestmark = pytest.mark.slow

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/upstream/kms"


class Deployed:
    def __init__(self, deployment: Deployment, upstream: UpstreamPki, aws: MotoServer) -> None:
        self.deployment = deployment
        self.upstream = upstream
        self.aws = aws


def _upstream(aws: MotoServer, upstream: UpstreamPki) -> str:
    """The upstream PKI's secrets; the plugin's table naming them."""
    client = aws.client("secretsmanager")
    arns = {
        name: client.create_secret(
            Name=f"upstream-{name}-{secrets.token_hex(4)}", SecretString=pem.decode()
        )["ARN"]
        for name, pem in (
            ("cert_file_arn", upstream.cert_pem),
            ("key_file_arn", upstream.key_pem),
            ("bundle_file_arn", upstream.bundle_pem),
        )
    }
    lines = "\n".join(f'{name} = "{arn}"' for name, arn in arns.items())
    return f"""
[server.plugins.upstream_authority.awssecret]
region = "{aws.region}"
{lines}
"""


def _key_manager(aws: MotoServer) -> str:
    return f"""[server.plugins.key_manager.aws_kms]
region = "{aws.region}"
key_identifier_value = "e2e-{secrets.token_hex(4)}"
"""


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    root = short_temp_dir()
    upstream = UpstreamPki()
    port = free_port()
    with MotoServer() as aws, pytest.MonkeyPatch.context() as patch:
        for name, value in aws.environment().items():
            patch.setenv(name, value)  # the server process inherits them
        deployment = Deployment.start(
            ServerSettings(
                root=root,
                port=port,
                key_manager=_key_manager(aws),
                extra_plugins=_upstream(aws, upstream),
            ),
            AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
            entries=[(WORKLOAD, [f"unix:uid:{os.getuid()}"])],
        )
        try:
            yield Deployed(deployment, upstream, aws)
        finally:
            deployment.stop()


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_server_ca_key_lives_in_kms(deployed: Deployed, tmp_path: Path) -> None:
    kms = deployed.aws.client("kms")
    public = {
        kms.get_public_key(KeyId=key["KeyId"])["PublicKey"] for key in kms.list_keys()["Keys"]
    }
    tmp_path.chmod(0o755)
    run_workload(deployed.deployment.agent.endpoint, "x509", str(tmp_path))
    server_ca = _certificates(tmp_path / "svid.pem")[1]
    der = server_ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert der in public


def test_svid_chain_verifies_against_the_bundle_roots(deployed: Deployed, tmp_path: Path) -> None:
    upstream = deployed.upstream
    tmp_path.chmod(0o755)
    answer = run_workload(deployed.deployment.agent.endpoint, "x509", str(tmp_path))
    assert answer["spiffe_id"] == WORKLOAD
    chain = _certificates(tmp_path / "svid.pem")
    roots = _certificates(tmp_path / "bundle.pem")
    assert roots == [upstream.root[0]]
    assert len(chain) == 4
    leaf, server_ca, signer, intermediate = chain
    assert (signer, intermediate) == (upstream.signer[0], upstream.intermediate[0])
    assert server_ca.issuer == signer.subject
    assert leaf.issuer == server_ca.subject

    verified = openssl_verify(tmp_path, leaf, chain[1:], roots)
    if verified is None:
        pytest.skip("openssl is not installed: the chain was checked above, not by openssl")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")
