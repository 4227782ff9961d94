"""Attestation latency of gcp_iit, azure_msi, k8s_psat and aws_iid against join_token, in one
run.

Run from the repository root: ``.venv/bin/python tests/bench/bench_cloud_node_attestors.py``
(100 agents per attestor by default; ``--agents`` to change it).

A real ``pyspire-server`` process has all five node attestors configured; the cloud ones talk
to the loopback fakes their plugins ship (Google's metadata service, key set and Compute API;
Azure's IMDS, Entra ID and Resource Manager; a Kubernetes API server; for AWS, the instance
metadata service and moto's server as EC2 and IAM), which run in this process. For each
attestor, ``--agents`` distinct nodes attest one after another, each from its own loopback
address (the server admits one attestation per second per address): the clock runs from the
agent half producing its evidence (fetching the token or document from the fake metadata
service, reading the token file, or taking the join token) until the server's AttestAgent
answer with the agent SVID has arrived. What the server does in between is all included:
token verification, the JWK Set (fetched once, then cached), the Compute API, Resource Manager
or the TokenReview, pod and node reads, the PKCS #7 signature and EC2 DescribeInstances and
IAM GetInstanceProfile calls, issuing the SVID and writing the node record.

The floor is join_token in the same run (a datastore read and delete instead of any remote
call); the ratios show what each cloud attestor's verification and API calls add. The last
row, "(moto alone)", is the two AWS calls aws_iid makes, DescribeInstances and
GetInstanceProfile, made with boto3 against the same moto for the same instances: the share
of aws_iid's time that is moto's. Nothing is asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import betterproto
import grpclib.const
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire_nodeattestor_aws_iid import AgentAwsIidAttestor, AgentAwsIidConfig
from pyspire_nodeattestor_aws_iid.testing import AwsSigner, FakeImds, launch_instance
from pyspire_nodeattestor_azure_msi import AgentAzureMsiAttestor, AgentAzureMsiConfig
from pyspire_nodeattestor_azure_msi.testing import FakeAzure, FakeNic, FakeVm
from pyspire_nodeattestor_gcp_iit import AgentGcpIitAttestor, AgentGcpIitConfig
from pyspire_nodeattestor_gcp_iit.testing import FakeGcp, FakeInstance
from pyspire_nodeattestor_k8s_psat import AgentK8sPsatAttestor, AgentK8sPsatConfig
from pyspire_nodeattestor_k8s_psat.testing import FakeKubernetes, FakeNode, FakePod

from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.testing import make_host_services
from pyspire_sdk.testing.aws import MotoServer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE.parent / "reliability"))

from channels import SourceBoundChannel, anonymous_context  # noqa: E402
from processes import ServerProcess, ServerSettings, free_port, short_temp_dir  # noqa: E402
from test_join_token_race import ATTEST_AGENT  # noqa: E402

TENANT = "00000000-1111-2222-3333-444444444444"
CALL_TIMEOUT = 30.0


def csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def attest_once(
    port: int, source: str, name: str, payload: bytes, request_csr: bytes
) -> None:
    """One AttestAgent call from ``source``; raises unless an agent SVID comes back."""
    channel = SourceBoundChannel(source, "127.0.0.1", port, anonymous_context())
    try:
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
                        params=agent_pb.AgentX509SvidParams(csr=request_csr),
                    )
                )
            )
            response = await stream.recv_message()
            await stream.end()
            await stream.recv_trailing_metadata()
    finally:
        channel.close()
    if response is None or betterproto.which_one_of(response, "step")[0] != "result":
        raise RuntimeError(f"{name}: no attestation result")
    if not response.result.svid.cert_chain:
        raise RuntimeError(f"{name}: the result has no SVID")


async def measure(
    port: int,
    subnet: int,
    name: str,
    agents: int,
    prepare: Callable[[int], Awaitable[None]],
    payload: Callable[[], Awaitable[bytes]],
) -> list[float]:
    """Seconds per attestation of ``agents`` distinct nodes, one after another."""
    samples = []
    for number in range(agents):
        await prepare(number)
        request_csr = csr()
        source = f"127.0.{subnet}.{10 + number}"
        started = time.perf_counter()
        evidence = await payload()
        await attest_once(port, source, name, evidence, request_csr)
        samples.append(time.perf_counter() - started)
    return samples


def moto_calls(aws: MotoServer, instance_ids: list[str]) -> list[float]:
    """Seconds per pair of the calls aws_iid's server half makes, DescribeInstances and
    GetInstanceProfile, made here with boto3 for the same instances: what moto itself takes
    of each aws_iid attestation."""
    ec2, iam = aws.client("ec2", region="us-west-2"), aws.client("iam")
    states = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    samples = []
    for instance_id in instance_ids:
        started = time.perf_counter()
        ec2.describe_instances(InstanceIds=[instance_id], Filters=states)
        iam.get_instance_profile(InstanceProfileName="NodeProfile")
        samples.append(time.perf_counter() - started)
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, root: Path) -> dict[str, list[float]]:
    clock = SystemClock()
    gcp, azure, kube = FakeGcp(clock), FakeAzure(clock), FakeKubernetes(clock)
    azure.apps[(TENANT, "spire-app")] = "app-secret"
    host = make_host_services(root, clock=clock)
    results: dict[str, list[float]] = {}
    with ExitStack() as stack:
        google = stack.enter_context(gcp.serving_in_thread(root / "gcp"))
        cloud = stack.enter_context(azure.serving_in_thread(root / "azure"))
        cluster = stack.enter_context(kube.serving_in_thread(root / "kube"))
        aws = stack.enter_context(MotoServer())
        signer = AwsSigner()
        imds = FakeImds(signer)
        metadata = stack.enter_context(imds.serving_in_thread())
        certificates = signer.write_certificates(root / "aws.pem")
        account = gcp.write_service_account_file(root / "sa.json", google.token_uri)
        server = ServerProcess(
            ServerSettings(
                root=root,
                port=free_port(),
                log_level="WARN",
                extra_plugins=f"""
[server.plugins.node_attestor.gcp_iit]
projectid_allow_list = ["project-123"]
use_instance_metadata = true
service_account_file = "{account}"
allowed_label_keys = ["env"]
jwks_url = "{google.jwks_url}"
compute_endpoint = "{google.compute_endpoint}"
ca_file = "{google.ca_file}"

[server.plugins.node_attestor.azure_msi]
authority_host = "{cloud.authority_host}"
resource_manager_endpoint = "{cloud.resource_manager_endpoint}"
ca_file = "{cloud.ca_file}"
[server.plugins.node_attestor.azure_msi.tenants."{TENANT}"]
subscription_id = "d5b40d61-272e-48da-beb9-05f295c42bd6"
app_id = "spire-app"
app_secret = "app-secret"

[server.plugins.node_attestor.k8s_psat.clusters.bench]
service_account_allow_list = ["spire:spire-agent"]
kube_config_file = "{cluster.kubeconfig}"
allowed_node_label_keys = ["zone"]

[server.plugins.node_attestor.aws_iid]
certificate_path = "{certificates}"
""",
            )
        )
        stack.callback(server.kill)
        # it runs an event loop of its own; AWS_ENDPOINT_URL sends its AWS calls to moto
        await asyncio.to_thread(server.start, aws.environment())
        port = server.settings.port

        tokens: list[str] = []

        async def join_prepare(number: int) -> None:
            tokens.append(await asyncio.to_thread(server.generate_token))

        async def join_payload() -> bytes:
            return tokens[-1].encode()

        results["join_token"] = await measure(
            port, 1, "join_token", args.agents, join_prepare, join_payload
        )

        gcp_agent = AgentGcpIitAttestor()
        await gcp_agent.configure(AgentGcpIitConfig(identity_token_host=google.metadata_host), host)

        async def gcp_prepare(number: int) -> None:
            gcp.add_instance(
                FakeInstance(name=f"node-{number}", tags=("web",), labels={"env": "prod"})
            )

        results["gcp_iit"] = await measure(
            port, 2, "gcp_iit", args.agents, gcp_prepare, gcp_agent.attestation_payload
        )
        await gcp_agent.close()

        azure_agent = AgentAzureMsiAttestor()
        await azure_agent.configure(AgentAzureMsiConfig(imds_endpoint=cloud.imds_endpoint), host)

        async def azure_prepare(number: int) -> None:
            azure.add_vm(FakeVm(name=f"vm-{number}", nics=(FakeNic(name=f"nic-{number}"),)))

        results["azure_msi"] = await measure(
            port, 3, "azure_msi", args.agents, azure_prepare, azure_agent.attestation_payload
        )
        await azure_agent.close()

        token_path = root / "psat"
        kube_agent = AgentK8sPsatAttestor()
        await kube_agent.configure(AgentK8sPsatConfig(cluster="bench", token_path=token_path), host)

        async def kube_prepare(number: int) -> None:
            node = kube.add_node(FakeNode(name=f"worker-{number}", labels={"zone": "a"}))
            pod = kube.add_pod(FakePod(name=f"spire-agent-{number}", node_name=node.name))
            token_path.write_text(kube.projected_token(pod))

        results["k8s_psat"] = await measure(
            port, 4, "k8s_psat", args.agents, kube_prepare, kube_agent.attestation_payload
        )
        await kube_agent.close()

        aws_agent = AgentAwsIidAttestor()
        await aws_agent.configure(AgentAwsIidConfig(ec2_metadata_endpoint=metadata.url), host)

        async def aws_prepare(number: int) -> None:
            launched = await asyncio.to_thread(
                launch_instance,
                aws,
                tags={"name": f"node-{number}"},
                security_group="web",
                role="Node",
            )
            imds.serve(launched)
            instance_ids.append(launched.instance_id)

        instance_ids: list[str] = []
        results["aws_iid"] = await measure(
            port, 5, "aws_iid", args.agents, aws_prepare, aws_agent.attestation_payload
        )
        await aws_agent.close()
        results["(moto alone)"] = await asyncio.to_thread(moto_calls, aws, instance_ids)

        agents = await asyncio.to_thread(lambda: len(server.agent_ids()))
        expected = 5 * args.agents
        if agents != expected:
            raise RuntimeError(f"the server holds {agents} agents, expected {expected}")
        json.dumps(results)  # every sample is a plain float
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=100, help="nodes attested per attestor")
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= 240:
        parser.error("--agents must be between 1 and 240 (one loopback address each)")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    root = short_temp_dir()
    try:
        results = asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    floor = results["join_token"]
    floor_p50, floor_p99 = percentile(floor, 0.5), percentile(floor, 0.99)
    print(
        f"{args.agents} agents attested per attestor, one after another, each from its own address"
    )
    header = ("attestor", "p50 ms", "p99 ms", "mean ms", "p50 / floor", "p99 / floor")
    print(f"{header[0]:14} " + " ".join(f"{title:>11}" for title in header[1:]))
    for name, samples in results.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(
            f"{name:14} {p50 * 1000:11.1f} {p99 * 1000:11.1f} "
            f"{statistics.mean(samples) * 1000:11.1f} {p50 / floor_p50:10.2f}x "
            f"{p99 / floor_p99:10.2f}x"
        )
    print("floor: join_token in the same run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
