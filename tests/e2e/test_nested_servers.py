"""Nested servers in real processes: a root ``pyspire-server`` with its agent, and two
downstream servers (two branches) whose CAs come from the root through the ``spire`` upstream
authority.

The downstream servers run next to the root's agent, where an entry marked ``downstream``
gives them their X509-SVID; they present it to the root's ``SVID.NewDownstreamX509CA``. Under
each downstream server run its own agent and workloads. What must hold: the downstream bundles
hold the root's CA; a workload SVID of a branch chains through its server's CA to the root's
CA, and the system's ``openssl verify`` accepts it against the root's bundle alone; workloads
of the two branches, and of the root's agent and a branch, do mutual TLS; a JWT-SVID of one
branch validates at the root's agent and at the other branch's agent (each branch published its
JWT key to the root and follows the root's bundle).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ProcessError,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
    wait_for,
)
from pyspire_upstreamauthority_spire import SpireUpstreamAuthority, SpireUpstreamConfig
from pyspire_upstreamauthority_spire.plugin import pyspire_upstream_authorities
from upstream_pki import openssl_verify

from pyspire.server.upstream_server import UpstreamServers
from pyspire_sdk.config import load_config
from pyspire_sdk.plugin import HostServices, PluginRegistration
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.upstream_authority_contract import (
    Misconfiguration,
    UpstreamAuthorityContract,
)

pytestmark = pytest.mark.slow

DOWNSTREAM_SERVER = f"spiffe://{TRUST_DOMAIN}/downstream/server"
DOWNSTREAM_WORKLOAD = f"spiffe://{TRUST_DOMAIN}/downstream/workload"
OTHER_WORKLOAD = f"spiffe://{TRUST_DOMAIN}/other/workload"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
TIMEOUT = 30.0
UID_SELECTOR = f"unix:uid:{os.getuid()}"
TD = TrustDomain(TRUST_DOMAIN)


@dataclass
class Tiers:
    root: Deployment
    downstream: Deployment
    other: Deployment


def _downstream_svid_served(root: Deployment, directory: Path) -> bool | None:
    try:
        answer = run_workload(root.agent.endpoint, "x509", str(directory))
    except ProcessError:
        return None
    return True if answer["spiffe_id"] == DOWNSTREAM_SERVER else None


@pytest.fixture(scope="module")
def tiers() -> Iterator[Tiers]:
    root_dir, root_port = short_temp_dir(), free_port()
    root = Deployment.start(
        ServerSettings(root=root_dir, port=root_port),
        AgentSettings(root=root_dir, server_port=root_port, bootstrap_bundle=root_dir / "b.pem"),
    )
    try:
        root.server.cli(
            "entry", "create", "-spiffeID", DOWNSTREAM_SERVER, "-parentID", root.agent_id,
            "-selector", UID_SELECTOR, "-downstream",
        )  # fmt: skip
        probe = root_dir / "probe"
        probe.mkdir()
        wait_for(
            "the root agent to serve the downstream server's SVID",
            lambda: _downstream_svid_served(root, probe),
            TIMEOUT,
        )
        downstream = _branch(root, root_port, DOWNSTREAM_WORKLOAD)
        try:
            other = _branch(root, root_port, OTHER_WORKLOAD)
        except BaseException:
            downstream.stop()
            raise
    except BaseException:
        root.stop()
        raise
    try:
        yield Tiers(root, downstream, other)
    finally:
        other.stop()
        downstream.stop()
        root.stop()


def _branch(root: Deployment, root_port: int, workload: str) -> Deployment:
    """A downstream server under ``root`` (through the root's agent), its agent, and an entry
    for ``workload`` under that agent."""
    directory, port = short_temp_dir(), free_port()
    upstream = f"""
[server.plugins.upstream_authority.spire]
server_address = "127.0.0.1"
server_port = {root_port}
workload_api_socket = "{root.agent.socket_path}"
"""
    return Deployment.start(
        ServerSettings(root=directory, port=port, extra_plugins=upstream),
        AgentSettings(root=directory, server_port=port, bootstrap_bundle=directory / "b.pem"),
        entries=[(workload, [UID_SELECTOR])],
    )


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_the_downstream_bundles_hold_the_root_ca(tiers: Tiers) -> None:
    root_bundle = _certificates(tiers.root.root / "b.pem")
    assert _certificates(tiers.downstream.root / "b.pem") == root_bundle
    assert _certificates(tiers.other.root / "b.pem") == root_bundle


def test_downstream_svid_chains_to_the_root_with_openssl(tiers: Tiers, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    answer = run_workload(tiers.downstream.agent.endpoint, "x509", str(tmp_path))
    assert answer["spiffe_id"] == DOWNSTREAM_WORKLOAD
    chain = _certificates(tmp_path / "svid.pem")
    roots = _certificates(tiers.root.root / "b.pem")
    assert _certificates(tmp_path / "bundle.pem") == roots
    assert len(chain) == 2
    leaf, downstream_ca = chain
    assert leaf.issuer == downstream_ca.subject
    constraints = downstream_ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    san = downstream_ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TRUST_DOMAIN}"]
    assert any(downstream_ca.issuer == root.subject for root in roots)

    verified = openssl_verify(tmp_path, leaf, chain[1:], roots)
    if verified is None:
        pytest.skip("openssl is not installed: the chain was checked above, not by openssl")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")
    # The downstream CA is what links the leaf to the root.
    short = openssl_verify(tmp_path, leaf, [], roots)
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


@pytest.mark.parametrize("client_side", ["root", "other"])
def test_workloads_of_two_tiers_or_branches_do_mutual_tls(tiers: Tiers, client_side: str) -> None:
    """The server side runs under the first branch's agent; the client under the root's agent
    (where this user's processes get the SVID of the downstream entry) or the other branch's."""
    client_agent, client_id = {
        "root": (tiers.root.agent, DOWNSTREAM_SERVER),
        "other": (tiers.other.agent, OTHER_WORKLOAD),
    }[client_side]
    server = _start(
        "workload_server.py",
        tiers.downstream.agent.endpoint,
        "--allow",
        client_id,
        "--count",
        "1",
    )
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
            "workload_client.py",
            client_agent.endpoint,
            "--port",
            str(port),
            "--server-id",
            DOWNSTREAM_WORKLOAD,
        )
        out, err = client.communicate(timeout=TIMEOUT)
        assert client.returncode == 0, out + err
        assert f"this is {DOWNSTREAM_WORKLOAD}" in out
        rest, _ = server.communicate(timeout=TIMEOUT)
        assert f"server: answered {client_id}" in seen + rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _jwt_key_ids(deployment: Deployment) -> set[str]:
    shown = deployment.server.cli("bundle", "show", "-format", "spiffe").stdout
    return {key["kid"] for key in json.loads(shown)["keys"] if key.get("use") == "jwt-svid"}


def _validated_at(agent_endpoint: str, token: str) -> str | None:
    from spiffe import WorkloadApiClient
    from spiffe.errors import PySpiffeError

    try:
        with WorkloadApiClient(socket_path=agent_endpoint) as client:
            return str(client.validate_jwt_svid(token, "nested").spiffe_id)
    except PySpiffeError:
        return None


def test_jwt_svids_validate_across_the_tiers_and_branches(tiers: Tiers) -> None:
    """Each branch published its JWT key to the root and follows the root's bundle, so a
    JWT-SVID of one branch validates at the root's agent and, once the other branch has seen
    the root's bundle change, at the other branch's agent."""
    from spiffe import WorkloadApiClient

    downstream_keys = _jwt_key_ids(tiers.downstream)
    assert downstream_keys
    assert downstream_keys | _jwt_key_ids(tiers.other) <= _jwt_key_ids(tiers.root)
    for issuing, validating, spiffe_id in [
        (tiers.downstream, tiers.other, DOWNSTREAM_WORKLOAD),
        # The first branch published its key before the other existed: only following the
        # root's bundle brings it the other branch's key.
        (tiers.other, tiers.downstream, OTHER_WORKLOAD),
    ]:
        with WorkloadApiClient(socket_path=issuing.agent.endpoint) as client:
            svid = client.fetch_jwt_svid(audience={"nested"})
        assert str(svid.spiffe_id) == spiffe_id
        assert _validated_at(tiers.root.agent.endpoint, svid.token) == spiffe_id
        validated = wait_for(
            "a branch to validate the other branch's JWT-SVID",
            lambda: _validated_at(validating.agent.endpoint, svid.token),  # noqa: B023
            TIMEOUT,
        )
        assert validated == spiffe_id


class TestSpireUpstreamContract(UpstreamAuthorityContract):
    """The SDK's upstream authority contract against the live root server, with the
    downstream server's SVID from the root's agent (this process runs as the user the
    ``downstream`` entry selects). The root signs on the wall clock; the clock starts on a whole
    second because the API carries JWT key expiry in whole seconds."""

    @pytest.fixture
    def fake_clock(self) -> FakeClock:
        return FakeClock(start=datetime.now(UTC).replace(microsecond=0))

    @pytest_asyncio.fixture
    async def upstream_authority(
        self, tiers: Tiers, host_services: HostServices
    ) -> AsyncIterator[UpstreamAuthority]:
        plugin = SpireUpstreamAuthority()
        config = load_config(
            SpireUpstreamConfig,
            {
                "server_address": "127.0.0.1",
                "server_port": tiers.root.server.settings.port,
                "workload_api_socket": str(tiers.root.agent.socket_path),
            },
        )
        host = dataclasses.replace(host_services, upstream_servers=UpstreamServers(TD))
        await plugin.configure(config, host)
        yield plugin
        await plugin.close()

    @pytest.fixture
    def upstream_registration(self) -> PluginRegistration[Any, UpstreamAuthority]:
        [registration] = pyspire_upstream_authorities()
        return registration

    @pytest.fixture
    def upstream_misconfigurations(self) -> list[Misconfiguration]:
        socket = "/tmp/agent/api.sock"
        return [
            Misconfiguration({"server_port": 1, "workload_api_socket": socket}, "server_address"),
            Misconfiguration(
                {"server_address": "x", "server_port": 0, "workload_api_socket": socket},
                "server_port",
            ),
            Misconfiguration(
                {"server_address": "x", "server_port": 1, "workload_api_socket": "rel"},
                "workload_api_socket",
            ),
        ]
