"""A real ``pyspire-server`` whose CA is signed by the ``awssecret`` upstream authority, with
moto's server as AWS Secrets Manager and STS, a real agent, and a workload using py-spiffe.

The upstream PKI (root → intermediate → signing CA) is stored in three secrets of another
account, read through an assumed role. What must hold: the bundle the server gives out and the
one the workload gets hold the upstream root and not the server's CA; the workload's
X509-SVID chain is the SVID, the server's CA and the upstream intermediates, and the system's
``openssl verify`` accepts it against the root alone.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
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

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/upstream/awssecret"
ACCOUNT = "111122223333"


class Deployed:
    def __init__(self, deployment: Deployment, upstream: UpstreamPki) -> None:
        self.deployment = deployment
        self.upstream = upstream


def _store(aws: MotoServer, upstream: UpstreamPki) -> str:
    """The secrets, in ``ACCOUNT``; the plugin's table naming them."""
    client = aws.client("secretsmanager", credentials=aws.assume_role(ACCOUNT))
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
assume_role_arn = "arn:aws:iam::{ACCOUNT}:role/spire-upstream"
{lines}
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
            ServerSettings(root=root, port=port, extra_plugins=_store(aws, upstream)),
            AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
            entries=[(WORKLOAD, [f"unix:uid:{os.getuid()}"])],
        )
        try:
            yield Deployed(deployment, upstream)
        finally:
            deployment.stop()


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_svid_chain_from_secrets_verifies_against_the_upstream_root(
    deployed: Deployed, tmp_path: Path
) -> None:
    upstream = deployed.upstream
    assert _certificates(deployed.deployment.root / "bootstrap.pem") == [upstream.root[0]]

    tmp_path.chmod(0o755)
    answer = run_workload(deployed.deployment.agent.endpoint, "x509", str(tmp_path))
    assert answer["spiffe_id"] == WORKLOAD
    chain = _certificates(tmp_path / "svid.pem")
    assert _certificates(tmp_path / "bundle.pem") == [upstream.root[0]]
    assert len(chain) == 4
    leaf, server_ca, signer, intermediate = chain
    assert (signer, intermediate) == (upstream.signer[0], upstream.intermediate[0])
    assert server_ca.issuer == signer.subject
    assert leaf.issuer == server_ca.subject

    verified = openssl_verify(tmp_path, leaf, chain[1:], [upstream.root[0]])
    if verified is None:
        pytest.skip("openssl is not installed: the chain was checked above, not by openssl")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")
    short = openssl_verify(tmp_path, leaf, [server_ca], [upstream.root[0]])
    assert short is not None
    assert short.returncode != 0
