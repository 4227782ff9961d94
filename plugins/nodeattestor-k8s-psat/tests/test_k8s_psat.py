"""k8s_psat against a loopback HTTPS fake of the Kubernetes API, through kubernetes_asyncio."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pyspire_nodeattestor_k8s_psat import (
    AgentK8sPsatAttestor,
    AgentK8sPsatConfig,
    ClusterConfig,
    ServerK8sPsatAttestor,
    ServerK8sPsatConfig,
)
from pyspire_nodeattestor_k8s_psat.testing import (
    FakeKubernetes,
    FakeKubernetesEndpoints,
    FakeNode,
    FakePod,
)

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import (
    ConfigError,
    InvalidArgumentError,
    PermissionDeniedError,
    PluginError,
    UnavailableError,
)
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.node_attestor_contract import NodeAttestorContract, run_attestation
from pyspire_sdk.testing.readme import assert_readme_documents

README = Path(__file__).resolve().parents[1] / "README.md"
NODE_UID = "5dbb7b21-65fe-11e9-b1b0-0800277ac80f"
POD_UID = "79261129-6b60-11e9-9054-0800277ac80f"


async def no_challenge(challenge: bytes) -> bytes:
    raise AssertionError("k8s_psat sends no challenge")


@pytest.fixture
def fake(fake_clock: FakeClock) -> FakeKubernetes:
    kubernetes = FakeKubernetes(fake_clock)
    kubernetes.add_node(
        FakeNode(name="minikube", uid=NODE_UID, labels={"zone": "a", "hidden": "x"})
    )
    kubernetes.add_pod(
        FakePod(
            name="spire-agent-v5wgr",
            node_name="minikube",
            uid=POD_UID,
            labels={"app": "spire-agent", "other": "y"},
            host_ip="172.16.10.1",
        )
    )
    return kubernetes


@pytest_asyncio.fixture
async def endpoints(fake: FakeKubernetes, tmp_path: Path) -> AsyncIterator[FakeKubernetesEndpoints]:
    async with fake.serving(tmp_path / "kube") as served:
        yield served


def write_token(fake: FakeKubernetes, path: Path, **options: Any) -> Path:
    path.write_text(fake.projected_token(fake.pods[("spire", "spire-agent-v5wgr")], **options))
    return path


def cluster(endpoints: FakeKubernetesEndpoints, **changes: Any) -> ClusterConfig:
    settings: dict[str, Any] = {
        "service_account_allow_list": ("spire:spire-agent",),
        "kube_config_file": str(endpoints.kubeconfig),
        "allowed_node_label_keys": ("zone",),
        "allowed_pod_label_keys": ("app",),
    }
    return ClusterConfig(**{**settings, **changes})


async def make_server(
    host: HostServices, clusters: dict[str, ClusterConfig]
) -> ServerK8sPsatAttestor:
    server = ServerK8sPsatAttestor()
    await server.configure(ServerK8sPsatConfig(clusters=clusters), host)
    return server


@pytest_asyncio.fixture
async def server(
    host_services: HostServices, endpoints: FakeKubernetesEndpoints
) -> AsyncIterator[ServerK8sPsatAttestor]:
    attestor = await make_server(host_services, {"MyCluster": cluster(endpoints)})
    yield attestor
    await attestor.close()


async def make_agent(
    host: HostServices, token_path: Path, name: str = "MyCluster"
) -> AgentK8sPsatAttestor:
    agent = AgentK8sPsatAttestor()
    await agent.configure(AgentK8sPsatConfig(cluster=name, token_path=token_path), host)
    return agent


@pytest_asyncio.fixture
async def agent(
    host_services: HostServices, fake: FakeKubernetes, tmp_path: Path
) -> AgentK8sPsatAttestor:
    return await make_agent(host_services, write_token(fake, tmp_path / "token"))


class TestK8sPsatContract(NodeAttestorContract):
    @pytest.fixture
    def server_node_attestor(self, server: ServerK8sPsatAttestor) -> ServerK8sPsatAttestor:
        return server

    @pytest.fixture
    def agent_node_attestor(self, agent: AgentK8sPsatAttestor) -> AgentK8sPsatAttestor:
        return agent

    @pytest.fixture
    def expected_agent_id(self) -> SpiffeId:
        return SpiffeId.parse(f"spiffe://example.org/spire/agent/k8s_psat/MyCluster/{NODE_UID}")


async def test_selectors_name_the_cluster_pod_and_node(
    server: ServerK8sPsatAttestor, agent: AgentK8sPsatAttestor, fake: FakeKubernetes
) -> None:
    result = await run_attestation(server, agent)
    assert result.selector_values == (
        "cluster:MyCluster",
        "agent_ns:spire",
        "agent_sa:spire-agent",
        "agent_pod_name:spire-agent-v5wgr",
        f"agent_pod_uid:{POD_UID}",
        "agent_node_ip:172.16.10.1",
        "agent_node_name:minikube",
        f"agent_node_uid:{NODE_UID}",
        "agent_node_label:zone:a",
        "agent_pod_label:app:spire-agent",
    )
    assert result.can_reattest is True
    [review] = fake.reviews
    assert review["kind"] == "TokenReview"
    assert review["spec"]["audiences"] == ["spire-server"]


async def test_pod_uid_agent_ids(
    host_services: HostServices, endpoints: FakeKubernetesEndpoints, agent: AgentK8sPsatAttestor
) -> None:
    server = await make_server(
        host_services, {"MyCluster": cluster(endpoints, use_pod_uid_for_agent_id=True)}
    )
    try:
        result = await run_attestation(server, agent)
    finally:
        await server.close()
    assert result.agent_id.path == f"/spire/agent/k8s_psat/MyCluster/pod/{POD_UID}"


async def test_an_expired_token_is_refused(
    server: ServerK8sPsatAttestor, agent: AgentK8sPsatAttestor, fake_clock: FakeClock
) -> None:
    await fake_clock.advance(timedelta(minutes=12))
    with pytest.raises(
        PermissionDeniedError,
        match=r'not authenticated according to TokenReview API for cluster "MyCluster": .*expired',
    ):
        await run_attestation(server, agent)


async def test_a_token_for_another_audience_is_refused(
    server: ServerK8sPsatAttestor, fake: FakeKubernetes, host_services: HostServices, tmp_path: Path
) -> None:
    agent = await make_agent(
        host_services, write_token(fake, tmp_path / "token", audiences=("vault",))
    )
    with pytest.raises(PermissionDeniedError, match=r"not authenticated .*audience"):
        await run_attestation(server, agent)


async def test_a_forged_token_is_refused(
    server: ServerK8sPsatAttestor, agent: AgentK8sPsatAttestor
) -> None:
    def forge(payload: bytes) -> bytes:
        data = json.loads(payload)
        head, body, signature = data["token"].split(".")
        data["token"] = f"{head}.{body}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
        return json.dumps(data).encode()

    with pytest.raises(PermissionDeniedError, match="signature is not valid"):
        await run_attestation(server, agent, alter_payload=forge)


async def test_an_unknown_cluster_is_refused(
    server: ServerK8sPsatAttestor, fake: FakeKubernetes, host_services: HostServices, tmp_path: Path
) -> None:
    agent = await make_agent(host_services, write_token(fake, tmp_path / "t"), name="Elsewhere")
    with pytest.raises(InvalidArgumentError, match='not configured for cluster "Elsewhere"'):
        await run_attestation(server, agent)


async def test_a_service_account_off_the_allow_list_is_refused(
    host_services: HostServices, endpoints: FakeKubernetesEndpoints, agent: AgentK8sPsatAttestor
) -> None:
    server = await make_server(
        host_services,
        {"MyCluster": cluster(endpoints, service_account_allow_list=("production:web",))},
    )
    try:
        with pytest.raises(
            PermissionDeniedError,
            match='"spire:spire-agent" is not an allowed service account for cluster "MyCluster"',
        ):
            await run_attestation(server, agent)
    finally:
        await server.close()


async def test_a_token_of_a_replaced_pod_is_refused(
    server: ServerK8sPsatAttestor, agent: AgentK8sPsatAttestor, fake: FakeKubernetes
) -> None:
    fake.pods[("spire", "spire-agent-v5wgr")].uid = "new-pod-uid"
    with pytest.raises(
        PermissionDeniedError, match=f'pod UID mismatch .* bound to pod UID "{POD_UID}"'
    ):
        await run_attestation(server, agent)


async def test_a_deleted_pod_is_unavailable(
    server: ServerK8sPsatAttestor, agent: AgentK8sPsatAttestor, fake: FakeKubernetes
) -> None:
    del fake.pods[("spire", "spire-agent-v5wgr")]
    with pytest.raises(
        UnavailableError, match="reading the pod for cluster 'MyCluster' failed: HTTP 404"
    ):
        await run_attestation(server, agent)


async def test_wrong_credentials_show_as_unavailable_without_the_token(
    server: ServerK8sPsatAttestor, agent: AgentK8sPsatAttestor, fake: FakeKubernetes
) -> None:
    fake.credential = "rotated"
    with pytest.raises(
        UnavailableError, match="TokenReview for cluster 'MyCluster' failed: HTTP 401"
    ) as caught:
        await run_attestation(server, agent)
    payload = json.loads(await agent.attestation_payload())
    assert payload["token"] not in str(caught.value)


async def test_a_changed_kubeconfig_is_read_again(
    server: ServerK8sPsatAttestor,
    agent: AgentK8sPsatAttestor,
    fake: FakeKubernetes,
    endpoints: FakeKubernetesEndpoints,
) -> None:
    await run_attestation(server, agent)
    fake.credential = "rotated-credential"
    document = json.loads(endpoints.kubeconfig.read_text())
    document["users"][0]["user"]["token"] = "rotated-credential"
    endpoints.kubeconfig.write_text(json.dumps(document))
    stat = endpoints.kubeconfig.stat()
    os.utime(endpoints.kubeconfig, (stat.st_atime, stat.st_mtime + 5))
    await run_attestation(server, agent)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[]", "not a JSON object"),
        (b"x", "not JSON"),
        (b'{"token": "t"}', "missing cluster"),
        (b'{"cluster": "MyCluster"}', "missing token"),
    ],
)
async def test_malformed_payloads_are_invalid(
    server: ServerK8sPsatAttestor, payload: bytes, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        await server.attest(payload, no_challenge)


async def test_the_agent_says_which_file_it_cannot_read(
    host_services: HostServices, tmp_path: Path
) -> None:
    agent = await make_agent(host_services, tmp_path / "missing")
    with pytest.raises(
        UnavailableError, match=r"unable to load the token from '.*missing': No such file"
    ):
        await agent.attestation_payload()
    (tmp_path / "empty").write_text("\n")
    agent = await make_agent(host_services, tmp_path / "empty")
    with pytest.raises(UnavailableError, match="the file is empty"):
        await agent.attestation_payload()
    with pytest.raises(PermissionDeniedError, match="does not use challenges"):
        await agent.answer_challenge(b"x")


async def test_a_kubeconfig_that_cannot_be_used_fails_configure(
    host_services: HostServices, tmp_path: Path
) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("{}")
    server = ServerK8sPsatAttestor()
    with pytest.raises(
        PluginError, match=r"cluster 'MyCluster': kube_config_file .* is not usable"
    ):
        await server.configure(
            ServerK8sPsatConfig(
                clusters={
                    "MyCluster": ClusterConfig(
                        service_account_allow_list=("a:b",), kube_config_file=str(broken)
                    )
                }
            ),
            host_services,
        )
    await server.close()
    missing = ServerK8sPsatAttestor()
    with pytest.raises(PluginError, match="cannot be read"):
        await missing.configure(
            ServerK8sPsatConfig(
                clusters={
                    "c": ClusterConfig(
                        service_account_allow_list=("a:b",), kube_config_file=str(tmp_path / "nope")
                    )
                }
            ),
            host_services,
        )
    await missing.close()


async def test_no_cluster_outside_a_cluster_fails_configure(
    host_services: HostServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    server = ServerK8sPsatAttestor()
    with pytest.raises(
        PluginError, match="has no kube_config_file and the server is not in a cluster"
    ):
        await server.configure(
            ServerK8sPsatConfig(clusters={"c": ClusterConfig(service_account_allow_list=("a:b",))}),
            host_services,
        )
    await server.close()


def test_bad_settings_are_refused_with_their_key() -> None:
    with pytest.raises(
        ConfigError, match=r"clusters\.c\.service_account_allow_list: must allow at least one"
    ):
        load_config(ServerK8sPsatConfig, {"clusters": {"c": {"service_account_allow_list": []}}})
    with pytest.raises(ConfigError, match="cluster: required key is missing"):
        load_config(AgentK8sPsatConfig, {})
    empty_audience = load_config(
        ServerK8sPsatConfig,
        {"clusters": {"c": {"service_account_allow_list": ["a:b"], "audience": []}}},
    )
    assert empty_audience.clusters["c"].audience == ()


@pytest.mark.parametrize("config", [ServerK8sPsatConfig, AgentK8sPsatConfig])
def test_readme_tables_match_the_declarations(config: type[Any]) -> None:
    assert_readme_documents(README, config)


def test_loading_the_plugin_imports_no_kubernetes_client() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_nodeattestor_k8s_psat.plugin as p; "
        "p.pyspire_server_node_attestors(); "
        "p.pyspire_agent_node_attestors()"
    )
    assert loaded.isdisjoint({"aiohttp", "kubernetes_asyncio"})
