"""A real ``pyspire-server`` whose CA is issued by the ``aws_pca`` upstream authority, a real
agent, and a workload using py-spiffe.

moto's server cannot issue CA certificates from ACM PCA (see the plugin's README), so the
private CA is the plugin's loopback ACM PCA (``pyspire_upstreamauthority_aws_pca.testing``),
under an intermediate and a root, in a thread of this process; moto answers STS for the role
the plugin assumes. What must hold: the bundle holds the private CA's root; the workload's
X509-SVID chain is the SVID, the server's CA (path length 0, SPIRE's default template), the
private CA and the intermediate, and ``openssl verify`` accepts it against the root alone.
"""

from __future__ import annotations

import os
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
from pyspire_upstreamauthority_aws_pca.testing import PrivateCaEndpoint
from upstream_pki import openssl_verify

from pyspire_sdk.clock import SystemClock
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.loopback import LoopbackThread

pytestmark = pytest.mark.slow

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/upstream/aws-pca"


class Deployed:
    def __init__(self, deployment: Deployment, endpoint: PrivateCaEndpoint) -> None:
        self.deployment = deployment
        self.endpoint = endpoint


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    root = short_temp_dir()
    endpoint = PrivateCaEndpoint(SystemClock(), depth=2)
    port = free_port()
    with (
        MotoServer() as aws,
        LoopbackThread(endpoint.routes()) as pca,
        pytest.MonkeyPatch.context() as patch,
    ):
        for name, value in aws.environment().items():
            patch.setenv(name, value)  # the server process inherits them
        table = f"""
[server.plugins.upstream_authority.aws_pca]
region = "{aws.region}"
certificate_authority_arn = "{endpoint.arn}"
endpoint = "{pca.url}"
assume_role_arn = "arn:aws:iam::111122223333:role/spire-upstream"
"""
        deployment = Deployment.start(
            ServerSettings(root=root, port=port, extra_plugins=table),
            AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
            entries=[(WORKLOAD, [f"unix:uid:{os.getuid()}"])],
        )
        try:
            yield Deployed(deployment, endpoint)
        finally:
            deployment.stop()


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_svid_chain_from_the_private_ca_verifies_against_its_root(
    deployed: Deployed, tmp_path: Path
) -> None:
    endpoint = deployed.endpoint
    assert _certificates(deployed.deployment.root / "bootstrap.pem") == [endpoint.root]

    tmp_path.chmod(0o755)
    answer = run_workload(deployed.deployment.agent.endpoint, "x509", str(tmp_path))
    assert answer["spiffe_id"] == WORKLOAD
    chain = _certificates(tmp_path / "svid.pem")
    assert _certificates(tmp_path / "bundle.pem") == [endpoint.root]
    leaf, server_ca, *above = chain
    assert above == [certificate for certificate, _ in endpoint.authority[:-1]]
    assert server_ca.issuer == endpoint.certificate.subject
    constraints = server_ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert leaf.issuer == server_ca.subject

    verified = openssl_verify(tmp_path, leaf, chain[1:], [endpoint.root])
    if verified is None:
        pytest.skip("openssl is not installed: the chain was checked above, not by openssl")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")
