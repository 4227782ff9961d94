"""gcp_iit, azure_msi, k8s_psat and aws_iid between a real server and real agents, against
loopback fakes of Google's, Azure's and a Kubernetes cluster's services, and moto's server as
EC2, IAM and STS.

For each attestor: the server runs it against the fake's HTTPS endpoints (its key set, cloud
API or Kubernetes API, or moto), an agent attests with what the fake's metadata service (or
token file) gives it, a workload fetches its X509-SVID through py-spiffe, and ``pyspire-server
agent show`` lists the node selectors the attestor found. Then a second agent whose evidence
the server must refuse (a project off the allow-list, a tenant not configured, a cluster not
configured, a document signed by a key that is not AWS's, a document replayed by another
process) exits with the reason, the server logs it, and no agent record is created.

aws_iid has a quick form (the test suite): of its three refusals it runs the replayed document,
the one only a second agent process shows; an instance unknown to EC2 and a document signed by a
key that is not AWS's are refused in-process by the plugin's own tests, and in real processes by
the full form (``scripts/long_tests.py``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from forms import by_form
from processes import (
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    Deployment,
    ServerProcess,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
)
from pyspire_nodeattestor_aws_iid.testing import AwsSigner, FakeImds, launch_instance
from pyspire_nodeattestor_azure_msi.testing import FakeAzure, FakeNic, FakeVm
from pyspire_nodeattestor_gcp_iit.testing import FakeGcp, FakeInstance
from pyspire_nodeattestor_k8s_psat.testing import FakeKubernetes, FakeNode, FakePod

from pyspire_sdk.clock import SystemClock
from pyspire_sdk.testing.aws import MotoServer

pytestmark = pytest.mark.slow

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/cloud-workload"
CALLER_SELECTOR = f"unix:uid:{os.getuid()}"
REFUSED_TIMEOUT = 30.0


@pytest.fixture
def root() -> Iterator[Path]:
    path = short_temp_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(
    root: Path,
    server_plugin: str,
    agent_plugin: str,
    agent_id: str,
    server_env: dict[str, str] | None = None,
) -> Deployment:
    """A server with ``server_plugin`` and an agent with ``agent_plugin`` (TOML tables), an
    entry for this test's uid under ``agent_id``; the agent attests (no join token). The
    server's environment gets ``server_env``."""
    port = free_port()
    server = ServerProcess(ServerSettings(root=root, port=port, extra_plugins=server_plugin))
    agent = AgentProcess(
        AgentSettings(
            root=root,
            server_port=port,
            bootstrap_bundle=root / "bootstrap.pem",
            node_attestor=agent_plugin,
        )
    )
    deployed = Deployment(root=root, server=server, agent=agent, token="", agent_id=agent_id)
    try:
        server.start(env=server_env)
        server.write_bundle(root / "bootstrap.pem")
        server.create_entry(WORKLOAD, agent_id, CALLER_SELECTOR)
        agent.start()
    except BaseException:
        deployed.stop()
        raise
    return deployed


def attested_agents(server: ServerProcess) -> list[str]:
    """The agent IDs the server holds, through the admin API in this process (the CLI's
    ``agent list`` costs an interpreter start)."""
    from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb

    answer = server.api(lambda client: client.agent.list_agents(agent_pb.ListAgentsRequest()))
    return sorted(f"spiffe://{agent.id.trust_domain}{agent.id.path}" for agent in answer.agents)


def check_attested(deployed: Deployment, selectors: list[str]) -> None:
    """The workload gets its SVID, and ``agent show`` lists the selectors."""
    got = run_workload(deployed.agent.endpoint, "ids")
    assert got["spiffe_ids"] == [WORKLOAD]
    shown = deployed.server.cli("agent", "show", "-spiffeID", deployed.agent_id).stdout
    for selector in selectors:
        assert selector in shown, shown
    assert attested_agents(deployed.server) == [deployed.agent_id]


def check_refused(
    deployed: Deployment, agent_plugin: str, reason: str, name: str = "refused"
) -> None:
    """A second agent with ``agent_plugin`` is refused for ``reason``; no record is made."""
    intruder = AgentProcess(
        AgentSettings(
            root=deployed.root,
            server_port=deployed.server.settings.port,
            bootstrap_bundle=deployed.root / "bootstrap.pem",
            name=name,
            node_attestor=agent_plugin,
        )
    )
    deployed.extra.append(intruder)
    intruder.launch()
    code = intruder.wait(timeout=REFUSED_TIMEOUT)
    assert code != 0, intruder.log()
    assert reason in intruder.log(), intruder.log()
    assert reason in deployed.server.log(), deployed.server.log()
    assert not intruder.socket_path.exists()
    assert attested_agents(deployed.server) == [deployed.agent_id]


def test_gcp_iit(root: Path) -> None:
    fake = FakeGcp(SystemClock())
    instance = fake.add_instance(
        FakeInstance(name="web-1", instance_id="1001", tags=("web",), labels={"env": "prod"})
    )
    with fake.serving_in_thread(root / "gcp") as endpoints:
        account = fake.write_service_account_file(root / "sa.json", endpoints.token_uri)
        server_plugin = f"""
[server.plugins.node_attestor.gcp_iit]
projectid_allow_list = ["project-123"]
use_instance_metadata = true
service_account_file = "{account}"
allowed_label_keys = ["env"]
jwks_url = "{endpoints.jwks_url}"
compute_endpoint = "{endpoints.compute_endpoint}"
ca_file = "{endpoints.ca_file}"
"""
        agent_plugin = (
            "[agent.plugins.node_attestor.gcp_iit]\n"
            f'identity_token_host = "{endpoints.metadata_host}"\n'
        )
        agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/gcp_iit/project-123/{instance.instance_id}"
        deployed = start(root, server_plugin, agent_plugin, agent_id)
        try:
            check_attested(
                deployed,
                [
                    "gcp_iit:project-id:project-123",
                    "gcp_iit:zone:us-west1-b",
                    "gcp_iit:instance-name:web-1",
                    f"gcp_iit:sa:{instance.email}",
                    "gcp_iit:tag:web",
                    "gcp_iit:label:env:prod",
                ],
            )
            fake.add_instance(FakeInstance(name="stranger", project_id="project-999"))
            check_refused(
                deployed, agent_plugin, 'project ID "project-999" is not in the allow list'
            )
        finally:
            deployed.stop()


def test_azure_msi(root: Path) -> None:
    fake = FakeAzure(SystemClock())
    tenant = "00000000-1111-2222-3333-444444444444"
    fake.apps[(tenant, "spire-app")] = "app-secret"
    vm = fake.add_vm(FakeVm(name="blog", nics=(FakeNic(name="blog-nic"),)))
    with fake.serving_in_thread(root / "azure") as endpoints:
        server_plugin = f"""
[server.plugins.node_attestor.azure_msi]
authority_host = "{endpoints.authority_host}"
resource_manager_endpoint = "{endpoints.resource_manager_endpoint}"
ca_file = "{endpoints.ca_file}"
[server.plugins.node_attestor.azure_msi.tenants."{tenant}"]
subscription_id = "{vm.subscription_id}"
app_id = "spire-app"
app_secret = "app-secret"
"""
        agent_plugin = (
            "[agent.plugins.node_attestor.azure_msi]\n"
            f'imds_endpoint = "{endpoints.imds_endpoint}"\n'
        )
        agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/azure_msi/{tenant}/{vm.principal_id}"
        deployed = start(root, server_plugin, agent_plugin, agent_id)
        try:
            check_attested(
                deployed,
                [
                    f"azure_msi:subscription-id:{vm.subscription_id}",
                    "azure_msi:vm-name:frontend:blog",
                    "azure_msi:network-security-group:frontend:webservers",
                    "azure_msi:virtual-network:frontend:vnet",
                    "azure_msi:virtual-network-subnet:frontend:vnet:default",
                ],
            )
            other_tenant = "99999999-1111-2222-3333-444444444444"
            fake.add_vm(FakeVm(name="elsewhere", tenant_id=other_tenant))
            check_refused(deployed, agent_plugin, f'tenant "{other_tenant}" is not authorized')
        finally:
            deployed.stop()


def test_k8s_psat(root: Path) -> None:
    fake = FakeKubernetes(SystemClock())
    node = fake.add_node(FakeNode(name="worker-1", labels={"zone": "a"}))
    pod = fake.add_pod(FakePod(name="spire-agent-x1", node_name=node.name))
    token = root / "psat"
    token.write_text(fake.projected_token(pod))
    with fake.serving_in_thread(root / "kube") as endpoints:
        server_plugin = f"""
[server.plugins.node_attestor.k8s_psat.clusters.prod]
service_account_allow_list = ["spire:spire-agent"]
kube_config_file = "{endpoints.kubeconfig}"
allowed_node_label_keys = ["zone"]
"""
        agent_plugin = (
            f'[agent.plugins.node_attestor.k8s_psat]\ncluster = "prod"\ntoken_path = "{token}"\n'
        )
        agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/k8s_psat/prod/{node.uid}"
        deployed = start(root, server_plugin, agent_plugin, agent_id)
        try:
            check_attested(
                deployed,
                [
                    "k8s_psat:cluster:prod",
                    "k8s_psat:agent_ns:spire",
                    "k8s_psat:agent_sa:spire-agent",
                    f"k8s_psat:agent_pod_uid:{pod.uid}",
                    f"k8s_psat:agent_node_uid:{node.uid}",
                    "k8s_psat:agent_node_label:zone:a",
                ],
            )
            wrong_cluster = agent_plugin.replace('cluster = "prod"', 'cluster = "staging"')
            check_refused(deployed, wrong_cluster, 'not configured for cluster "staging"')
        finally:
            deployed.stop()


@pytest.mark.quick_form
def test_aws_iid(root: Path) -> None:
    signer = AwsSigner()
    certificates = signer.write_certificates(root / "aws.pem")
    imds = FakeImds(signer)
    with MotoServer() as aws, imds.serving_in_thread() as metadata:
        instance = launch_instance(aws, tags={"name": "blog"}, security_group="web", role="Blog")
        imds.serve(instance)
        server_plugin = (
            f'[server.plugins.node_attestor.aws_iid]\ncertificate_path = "{certificates}"\n'
        )
        agent_plugin = (
            f'[agent.plugins.node_attestor.aws_iid]\nec2_metadata_endpoint = "{metadata.url}"\n'
        )
        agent_id = (
            f"spiffe://{TRUST_DOMAIN}/spire/agent/aws_iid/{instance.account_id}/"
            f"{instance.region}/{instance.instance_id}"
        )
        deployed = start(root, server_plugin, agent_plugin, agent_id, aws.environment())
        try:
            check_attested(
                deployed,
                [
                    f"aws_iid:account_id:{instance.account_id}",
                    "aws_iid:az:us-west-2b",
                    f"aws_iid:iamrole:{instance.role_arn}",
                    f"aws_iid:image:id:{instance.image_id}",
                    f"aws_iid:instance:id:{instance.instance_id}",
                    "aws_iid:region:us-west-2",
                    f"aws_iid:sg:id:{instance.security_group_id}",
                    "aws_iid:sg:name:web",
                    "aws_iid:tag:name:blog",
                ],
            )
            check_refused(
                deployed,
                agent_plugin,
                "attestation data has already been used to attest an agent",
                name="replayed",
            )
            if not by_form(quick=False, full=True):
                return
            imds.serve(instance, instanceId="i-0123456789abcdef0")
            check_refused(
                deployed,
                agent_plugin,
                'instance "i-0123456789abcdef0" was not found in EC2',
                name="unknown",
            )
            imds.signer = AwsSigner()
            imds.serve(launch_instance(aws))
            check_refused(deployed, agent_plugin, "is not a configured AWS certificate")
        finally:
            deployed.stop()
