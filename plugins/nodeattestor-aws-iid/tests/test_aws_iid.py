"""aws_iid against moto's server as EC2, IAM and STS, and a loopback metadata service serving
documents signed with a test key whose certificate is configured as AWS's."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from pyspire_nodeattestor_aws_iid import (
    AgentAwsIidAttestor,
    AgentAwsIidConfig,
    ServerAwsIidAttestor,
    ServerAwsIidConfig,
)
from pyspire_nodeattestor_aws_iid.ec2 import AwsSession, AwsSettings, Ec2Instance
from pyspire_nodeattestor_aws_iid.identity import AttestationData
from pyspire_nodeattestor_aws_iid.server import check_block_device, profile_name
from pyspire_nodeattestor_aws_iid.testing import (
    AwsSigner,
    FakeImds,
    LaunchedInstance,
    launch_instance,
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
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.loopback import LoopbackServer, serve_loopback
from pyspire_sdk.testing.node_attestor_contract import NodeAttestorContract, run_attestation
from pyspire_sdk.testing.readme import assert_readme_documents

README = Path(__file__).resolve().parents[1] / "README.md"
OTHER_ACCOUNT = "111111111111"


@pytest.fixture(scope="module")
def signer() -> AwsSigner:
    return AwsSigner()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    return moto_server


@pytest.fixture
def instance(aws: MotoServer) -> LaunchedInstance:
    return launch_instance(
        aws, tags={"name": "blog", "env": "prod"}, security_group="blog", role="Blog"
    )


@pytest.fixture
def imds(signer: AwsSigner, instance: LaunchedInstance) -> FakeImds:
    fake = FakeImds(signer)
    fake.serve(instance)
    return fake


@pytest_asyncio.fixture
async def metadata(imds: FakeImds) -> AsyncIterator[LoopbackServer]:
    async with imds.serving() as served:
        yield served


@pytest.fixture
def certificates(signer: AwsSigner, tmp_path: Path) -> Path:
    return signer.write_certificates(tmp_path / "aws.pem")


def server_config(certificates: Path, **changes: Any) -> ServerAwsIidConfig:
    return dataclasses.replace(ServerAwsIidConfig(certificate_path=certificates), **changes)


async def make_server(host: HostServices, config: ServerAwsIidConfig) -> ServerAwsIidAttestor:
    server = ServerAwsIidAttestor()
    await server.configure(config, host)
    return server


@pytest_asyncio.fixture
async def server(
    host_services: HostServices, certificates: Path
) -> AsyncIterator[ServerAwsIidAttestor]:
    attestor = await make_server(host_services, server_config(certificates))
    yield attestor
    await attestor.close()


async def make_agent(host: HostServices, endpoint: str) -> AgentAwsIidAttestor:
    agent = AgentAwsIidAttestor()
    await agent.configure(AgentAwsIidConfig(ec2_metadata_endpoint=endpoint), host)
    return agent


@pytest_asyncio.fixture
async def agent(
    host_services: HostServices, metadata: LoopbackServer
) -> AsyncIterator[AgentAwsIidAttestor]:
    attestor = await make_agent(host_services, metadata.url)
    yield attestor
    await attestor.close()


def agent_id(instance: LaunchedInstance) -> SpiffeId:
    return SpiffeId.parse(
        f"spiffe://example.org/spire/agent/aws_iid/{instance.account_id}/{instance.region}/"
        f"{instance.instance_id}"
    )


class TestAwsIidContract(NodeAttestorContract):
    @pytest.fixture
    def server_node_attestor(self, server: ServerAwsIidAttestor) -> ServerAwsIidAttestor:
        return server

    @pytest.fixture
    def agent_node_attestor(self, agent: AgentAwsIidAttestor) -> AgentAwsIidAttestor:
        return agent

    @pytest.fixture
    def expected_agent_id(self, instance: LaunchedInstance) -> SpiffeId:
        return agent_id(instance)


async def test_the_document_and_ec2_yield_spire_selectors(
    server: ServerAwsIidAttestor, agent: AgentAwsIidAttestor, instance: LaunchedInstance
) -> None:
    result = await run_attestation(server, agent)
    assert result.agent_id == agent_id(instance)
    assert result.selector_values == (
        f"account_id:{instance.account_id}",
        "az:us-west-2b",
        f"iamrole:{instance.role_arn}",
        f"image:id:{instance.image_id}",
        f"instance:id:{instance.instance_id}",
        "region:us-west-2",
        f"sg:id:{instance.security_group_id}",
        "sg:name:blog",
        "tag:env:prod",
        "tag:name:blog",
    )
    assert result.can_reattest is False


async def test_the_agent_asks_for_an_imdsv2_session_first(
    agent: AgentAwsIidAttestor, metadata: LoopbackServer, imds: FakeImds
) -> None:
    payload = json.loads(await agent.attestation_payload())
    assert list(payload) == ["document", "signature", "rsa2048"]
    assert payload["document"] == imds.document
    first, *reads = metadata.requests
    assert (first.method, first.path) == ("PUT", "/latest/api/token")
    assert first.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert [request.path.rsplit("/", 1)[1] for request in reads] == [
        "document",
        "signature",
        "rsa2048",
    ]
    assert all(request.headers["x-aws-ec2-metadata-token"] in imds.tokens for request in reads)


async def test_without_sessions_the_agent_reads_as_imdsv1(
    server: ServerAwsIidAttestor,
    host_services: HostServices,
    metadata: LoopbackServer,
    imds: FakeImds,
    instance: LaunchedInstance,
) -> None:
    imds.sessions = "absent"
    agent = await make_agent(host_services, metadata.url + "/latest/")  # SPIRE's documented form
    try:
        result = await run_attestation(server, agent)
    finally:
        await agent.close()
    assert result.agent_id == agent_id(instance)
    assert all("x-aws-ec2-metadata-token" not in r.headers for r in metadata.requests[1:])


async def test_an_unreachable_metadata_service_is_unavailable(
    host_services: HostServices,
) -> None:
    agent = await make_agent(host_services, "http://127.0.0.1:9")
    try:
        with pytest.raises(UnavailableError, match="unable to read the instance identity document"):
            await agent.attestation_payload()
    finally:
        await agent.close()


async def test_the_agent_refuses_challenges(agent: AgentAwsIidAttestor) -> None:
    with pytest.raises(PermissionDeniedError, match="does not use challenges"):
        await agent.answer_challenge(b"nonce")


async def attest_payload(server: ServerAwsIidAttestor, data: AttestationData) -> Any:
    async def no_challenge(challenge: bytes) -> bytes:
        raise AssertionError("aws_iid sends no challenge")

    return await server.attest(data.to_payload(), no_challenge)


@pytest.mark.parametrize("streaming", [True, False], ids=["ber", "der"])
async def test_the_rsa2048_signature_verifies_in_ber_and_der(
    server: ServerAwsIidAttestor,
    signer: AwsSigner,
    instance: LaunchedInstance,
    streaming: bool,
) -> None:
    document = instance.document()
    result = await attest_payload(
        server, AttestationData(document, rsa2048=signer.rsa2048(document, streaming=streaming))
    )
    assert result.agent_id == agent_id(instance)


async def test_the_older_signature_verifies_with_its_certificate_only(
    host_services: HostServices,
    server: ServerAwsIidAttestor,
    signer: AwsSigner,
    instance: LaunchedInstance,
    tmp_path: Path,
) -> None:
    document = instance.document()
    data = AttestationData(document, signature=signer.signature(document))
    assert (await attest_payload(server, data)).agent_id == agent_id(instance)

    only_2048 = signer.write_certificates(tmp_path / "rsa2048.pem", legacy=False)
    strict = await make_server(host_services, server_config(only_2048))
    try:
        with pytest.raises(PermissionDeniedError, match="no configured AWS certificate verifies"):
            await attest_payload(strict, data)
    finally:
        await strict.close()


async def test_a_document_not_the_signed_one_is_refused(
    server: ServerAwsIidAttestor, signer: AwsSigner, instance: LaunchedInstance
) -> None:
    """A genuine signature of one document cannot vouch for another."""
    signed = instance.document()
    forged = instance.document(instanceId="i-0123456789abcdef0")
    with pytest.raises(PermissionDeniedError, match="does not match the verified PKCS7 content"):
        await attest_payload(server, AttestationData(forged, rsa2048=signer.rsa2048(signed)))
    with pytest.raises(PermissionDeniedError, match="no configured AWS certificate verifies"):
        await attest_payload(server, AttestationData(forged, signature=signer.signature(signed)))


async def test_a_corrupted_signature_is_refused(
    server: ServerAwsIidAttestor, signer: AwsSigner, instance: LaunchedInstance
) -> None:
    document = instance.document()
    good = signer.rsa2048(document, streaming=False).replace("\n", "")
    position = len(good) - 20  # inside the signature value, the last element
    flipped = good[:position] + ("A" if good[position] != "A" else "B") + good[position + 1 :]
    with pytest.raises(PermissionDeniedError, match="failed verification of instance identity"):
        await attest_payload(server, AttestationData(document, rsa2048=flipped))
    with pytest.raises(InvalidArgumentError, match="signature is required"):
        await attest_payload(server, AttestationData(document))
    with pytest.raises(InvalidArgumentError, match="not base64"):
        await attest_payload(server, AttestationData(document, rsa2048="%%%"))


async def test_a_signature_from_an_unknown_certificate_is_refused(
    server: ServerAwsIidAttestor, agent: AgentAwsIidAttestor, imds: FakeImds
) -> None:
    imds.signer = AwsSigner()
    with pytest.raises(PermissionDeniedError, match="is not a configured AWS certificate"):
        await run_attestation(server, agent)


async def test_a_region_without_a_certificate_is_refused(
    host_services: HostServices,
    agent: AgentAwsIidAttestor,
    certificates: Path,
) -> None:
    config = ServerAwsIidConfig(region_certificate_paths={"us-east-1": certificates})
    server = await make_server(host_services, config)
    try:
        with pytest.raises(
            PermissionDeniedError, match='no AWS certificate is configured for region "us-west-2"'
        ):
            await run_attestation(server, agent)
    finally:
        await server.close()


async def test_an_instance_ec2_does_not_know_is_refused(
    server: ServerAwsIidAttestor, agent: AgentAwsIidAttestor, imds: FakeImds, instance: Any
) -> None:
    imds.serve(instance, instanceId="i-0123456789abcdef0")
    with pytest.raises(PermissionDeniedError, match='"i-0123456789abcdef0" was not found in EC2'):
        await run_attestation(server, agent)


async def test_a_terminated_instance_is_refused(
    server: ServerAwsIidAttestor,
    agent: AgentAwsIidAttestor,
    aws: MotoServer,
    instance: LaunchedInstance,
) -> None:
    aws.client("ec2", region=instance.region).terminate_instances(
        InstanceIds=[instance.instance_id]
    )
    with pytest.raises(PermissionDeniedError, match="is not pending or running"):
        await run_attestation(server, agent)


async def test_a_document_of_another_account_is_refused(
    server: ServerAwsIidAttestor, agent: AgentAwsIidAttestor, imds: FakeImds, instance: Any
) -> None:
    """The instance exists, but in another account than the (signed) document names."""
    imds.serve(instance, accountId="222222222222")
    with pytest.raises(PermissionDeniedError, match="not to the document's account \"2222"):
        await run_attestation(server, agent)


async def test_assume_role_reaches_instances_of_other_accounts(
    host_services: HostServices,
    server: ServerAwsIidAttestor,
    agent: AgentAwsIidAttestor,
    aws: MotoServer,
    imds: FakeImds,
    certificates: Path,
) -> None:
    elsewhere = launch_instance(aws, account_id=OTHER_ACCOUNT, tags={"name": "far"}, role="Remote")
    imds.serve(elsewhere)
    with pytest.raises(PermissionDeniedError, match="was not found in EC2"):
        await run_attestation(server, agent)  # the server's own account does not have it

    delegated = await make_server(
        host_services, server_config(certificates, assume_role="spire-server-delegate")
    )
    try:
        result = await run_attestation(delegated, agent)
    finally:
        await delegated.close()
    assert result.agent_id == agent_id(elsewhere)
    assert f"iamrole:arn:aws:iam::{OTHER_ACCOUNT}:role/Remote" in result.selector_values
    assert "tag:name:far" in result.selector_values


async def test_a_moved_root_volume_is_refused_unless_the_check_is_skipped(
    host_services: HostServices,
    server: ServerAwsIidAttestor,
    agent: AgentAwsIidAttestor,
    aws: MotoServer,
    instance: LaunchedInstance,
    certificates: Path,
) -> None:
    ec2 = aws.client("ec2", region=instance.region)
    described = ec2.describe_instances(InstanceIds=[instance.instance_id])
    volume = described["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]["Ebs"]
    ec2.detach_volume(VolumeId=volume["VolumeId"], InstanceId=instance.instance_id)
    with pytest.raises(PermissionDeniedError, match="failed to locate the root device"):
        await run_attestation(server, agent)

    for changes in (
        {"skip_block_device": True},
        {"account_ids_for_local_validation": (instance.account_id,)},
    ):
        relaxed = await make_server(host_services, server_config(certificates, **changes))
        try:
            assert (await run_attestation(relaxed, agent)).agent_id == agent_id(instance)
        finally:
            await relaxed.close()


def test_the_block_device_check_follows_spire() -> None:
    booted = datetime(2030, 1, 1, tzinfo=UTC)
    instance = Ec2Instance(
        owner_id="123456789012",
        root_device_type="ebs",
        root_device_name="/dev/xvda",
        block_devices=(("/dev/xvda", booted + timedelta(seconds=60)),),
        network_interfaces=((1, booted + timedelta(hours=1)), (0, booted)),
    )
    check_block_device(instance)
    moved = dataclasses.replace(
        instance, block_devices=(("/dev/xvda", booted + timedelta(seconds=61)),)
    )
    with pytest.raises(PermissionDeniedError, match="differ by 61 seconds"):
        check_block_device(moved)
    check_block_device(dataclasses.replace(moved, root_device_type="instance-store"))
    with pytest.raises(PermissionDeniedError, match="device index 0 is inaccessible"):
        check_block_device(dataclasses.replace(instance, network_interfaces=()))


def test_the_profile_name_is_the_last_segment_of_its_arn() -> None:
    assert profile_name("arn:aws:iam::123456789012:instance-profile/nodes/web/Blog") == "Blog"
    assert profile_name("arn:aws-cn:iam::123456789012:instance-profile/Blog") == "Blog"
    with pytest.raises(PermissionDeniedError, match="not the ARN of an instance profile"):
        profile_name("arn:aws:iam::123456789012:role/Blog")


async def test_instance_profile_selectors_can_be_disabled(
    host_services: HostServices, agent: AgentAwsIidAttestor, certificates: Path
) -> None:
    server = await make_server(
        host_services, server_config(certificates, disable_instance_profile_selectors=True)
    )
    try:
        result = await run_attestation(server, agent)
    finally:
        await server.close()
    assert not [value for value in result.selector_values if value.startswith("iamrole:")]
    assert "tag:name:blog" in result.selector_values


async def test_the_agent_path_template_may_use_tags(
    host_services: HostServices, agent: AgentAwsIidAttestor, certificates: Path
) -> None:
    template = '/{{ .PluginName }}/{{ .Region }}/{{ .Tags.name }}/{{ index .Tags "env" }}'
    server = await make_server(
        host_services, server_config(certificates, agent_path_template=template)
    )
    try:
        result = await run_attestation(server, agent)
    finally:
        await server.close()
    assert str(result.agent_id) == "spiffe://example.org/spire/agent/aws_iid/us-west-2/blog/prod"


def test_configuration_rules(certificates: Path) -> None:
    load_config(ServerAwsIidConfig, {"certificate_path": str(certificates)})
    regional = load_config(
        ServerAwsIidConfig, {"region_certificate_paths": {"us-west-2": str(certificates)}}
    )
    assert regional.region_certificate_paths == {"us-west-2": certificates}
    cases = {
        "certificate_path: AWS's public certificates are required": {},
        "secret_access_key: configuration missing secret access key": {
            "certificate_path": str(certificates),
            "access_key_id": "AKIA",
        },
        "access_key_id: configuration missing access key id": {
            "certificate_path": str(certificates),
            "secret_access_key": "shh-very-secret",
        },
        "agent_path_template: agent path template field .Zone is unknown": {
            "certificate_path": str(certificates),
            "agent_path_template": "/{{ .Zone }}",
        },
        "partition": {"certificate_path": str(certificates), "partition": "aws-mars"},
    }
    for message, data in cases.items():
        with pytest.raises(ConfigError) as refused:
            load_config(ServerAwsIidConfig, data)
        assert message in str(refused.value)
        assert "shh-very-secret" not in str(refused.value)


def test_the_secret_access_key_is_never_shown(certificates: Path) -> None:
    config = load_config(
        ServerAwsIidConfig,
        {
            "certificate_path": str(certificates),
            "access_key_id": "AKIA",
            "secret_access_key": "shh-very-secret",
        },
    )
    assert "shh-very-secret" not in repr(config)


async def test_an_unreadable_certificate_file_fails_configure(
    host_services: HostServices, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(PluginError, match=r"certificate_path .* cannot be read"):
        await make_server(host_services, ServerAwsIidConfig(certificate_path=bad))


def test_the_readme_documents_every_setting() -> None:
    assert_readme_documents(README, ServerAwsIidConfig, AgentAwsIidConfig)
    assert re.search(r"\| `aws_iid:tag:<key>:<value>`", README.read_text())


async def test_assumed_role_clients_are_made_again_before_their_credentials_expire(
    aws: MotoServer, instance: LaunchedInstance
) -> None:
    """moto's assumed-role credentials last an hour from the wall clock; the clients made with
    them serve until five minutes before that, by the injected clock."""
    clock = FakeClock(datetime.now(UTC))
    session = AwsSession(AwsSettings(assume_role="spire-server-delegate"), clock)
    try:
        await session.instance(instance.account_id, instance.region, instance.instance_id)
        first = await session._client("ec2", instance.account_id, instance.region)
        await clock.advance(timedelta(minutes=50))
        await session.instance(instance.account_id, instance.region, instance.instance_id)
        assert await session._client("ec2", instance.account_id, instance.region) is first
        await clock.advance(timedelta(minutes=6))
        await session.instance(instance.account_id, instance.region, instance.instance_id)
        assert await session._client("ec2", instance.account_id, instance.region) is not first
    finally:
        await session.close()


def test_loading_the_plugin_imports_neither_aws_sdk_nor_http_library() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_nodeattestor_aws_iid.plugin as p; "
        "p.pyspire_server_node_attestors(); p.pyspire_agent_node_attestors()"
    )
    assert loaded.isdisjoint({"aiohttp", "aiobotocore", "botocore"})


async def test_a_role_that_may_not_be_assumed_is_a_refusal(
    host_services: HostServices,
    agent: AgentAwsIidAttestor,
    certificates: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STS refusing the role (the node's account does not trust the server) refuses the node;
    STS answers here from a loopback server shaped as AWS's error response."""

    async def deny(request: web.Request) -> web.Response:
        return web.Response(
            status=403,
            content_type="text/xml",
            text='<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            "<Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized to perform "
            "sts:AssumeRole</Message></Error><RequestId>1</RequestId></ErrorResponse>",
        )

    async with serve_loopback([("POST", "/", deny)]) as sts:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        server = await make_server(host_services, server_config(certificates, assume_role="x"))
        try:
            with pytest.raises(PermissionDeniedError, match="AccessDenied: not authorized"):
                await run_attestation(server, agent)
        finally:
            await server.close()
