"""gcp_iit against a loopback fake of Google's metadata service, key set and Compute API."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pyspire_nodeattestor_gcp_iit import (
    AgentGcpIitAttestor,
    AgentGcpIitConfig,
    ServerGcpIitAttestor,
    ServerGcpIitConfig,
)
from pyspire_nodeattestor_gcp_iit.testing import FakeGcp, FakeGcpEndpoints, FakeInstance

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


@pytest.fixture
def fake(fake_clock: FakeClock) -> FakeGcp:
    gcp = FakeGcp(fake_clock)
    gcp.add_instance(
        FakeInstance(
            name="blog",
            instance_id="4242",
            tags=("web", "blue"),
            labels={"env": "prod", "team": "a", "secret": "no"},
            metadata={"role": "frontend", "empty": None, "big": "x" * 200, "other": "y"},
        )
    )
    return gcp


@pytest_asyncio.fixture
async def endpoints(fake: FakeGcp, tmp_path: Path) -> AsyncIterator[FakeGcpEndpoints]:
    async with fake.serving(tmp_path / "tls") as served:
        yield served


def server_config(endpoints: FakeGcpEndpoints, **changes: Any) -> ServerGcpIitConfig:
    config = ServerGcpIitConfig(
        projectid_allow_list=("project-123",),
        jwks_url=endpoints.jwks_url,
        compute_endpoint=endpoints.compute_endpoint,
        ca_file=endpoints.ca_file,
    )
    return dataclasses.replace(config, **changes)


async def make_server(host: HostServices, config: ServerGcpIitConfig) -> ServerGcpIitAttestor:
    server = ServerGcpIitAttestor()
    await server.configure(config, host)
    return server


@pytest_asyncio.fixture
async def server(
    host_services: HostServices, endpoints: FakeGcpEndpoints
) -> AsyncIterator[ServerGcpIitAttestor]:
    attestor = await make_server(host_services, server_config(endpoints))
    yield attestor
    await attestor.close()


@pytest_asyncio.fixture
async def agent(
    host_services: HostServices, endpoints: FakeGcpEndpoints
) -> AsyncIterator[AgentGcpIitAttestor]:
    attestor = AgentGcpIitAttestor()
    await attestor.configure(
        AgentGcpIitConfig(identity_token_host=endpoints.metadata_host), host_services
    )
    yield attestor
    await attestor.close()


class TestGcpIitContract(NodeAttestorContract):
    @pytest.fixture
    def server_node_attestor(self, server: ServerGcpIitAttestor) -> ServerGcpIitAttestor:
        return server

    @pytest.fixture
    def agent_node_attestor(self, agent: AgentGcpIitAttestor) -> AgentGcpIitAttestor:
        return agent

    @pytest.fixture
    def expected_agent_id(self) -> SpiffeId:
        return SpiffeId.parse("spiffe://example.org/spire/agent/gcp_iit/project-123/4242")


async def test_the_token_yields_spire_selectors_and_no_reattestation(
    server: ServerGcpIitAttestor, agent: AgentGcpIitAttestor, fake: FakeGcp
) -> None:
    result = await run_attestation(server, agent)
    assert result.selector_values == (
        "project-id:project-123",
        "zone:us-west1-b",
        "instance-name:blog",
        "sa:123456789-compute@developer.gserviceaccount.com",
    )
    assert result.can_reattest is False
    assert fake.compute_calls == 0


async def test_instance_metadata_adds_tags_and_allowed_labels_and_metadata(
    host_services: HostServices,
    endpoints: FakeGcpEndpoints,
    agent: AgentGcpIitAttestor,
    fake: FakeGcp,
    tmp_path: Path,
) -> None:
    key_file = fake.write_service_account_file(tmp_path / "sa.json", endpoints.token_uri)
    config = server_config(
        endpoints,
        use_instance_metadata=True,
        service_account_file=str(key_file),
        allowed_label_keys=("env", "team"),
        allowed_metadata_keys=("role", "empty"),
    )
    server = await make_server(host_services, config)
    try:
        first = await run_attestation(server, agent)
        await run_attestation(server, agent)
    finally:
        await server.close()
    assert first.selector_values[4:] == (
        "tag:web",
        "tag:blue",
        "label:env:prod",
        "label:team:a",
        "metadata:role:frontend",
        "metadata:empty:",
    )
    assert fake.compute_calls == 2
    assert len(fake.access_tokens) == 1, "the access token is reused while it is valid"


async def test_an_allowed_metadata_value_over_the_limit_fails_the_attestation(
    host_services: HostServices,
    endpoints: FakeGcpEndpoints,
    agent: AgentGcpIitAttestor,
    fake: FakeGcp,
    tmp_path: Path,
) -> None:
    key_file = fake.write_service_account_file(tmp_path / "sa.json", endpoints.token_uri)
    config = server_config(
        endpoints,
        use_instance_metadata=True,
        service_account_file=str(key_file),
        allowed_metadata_keys=("big",),
    )
    server = await make_server(host_services, config)
    try:
        with pytest.raises(PermissionDeniedError, match=r'"big" is 200 bytes, over .* \(128\)'):
            await run_attestation(server, agent)
    finally:
        await server.close()


async def test_the_instance_own_account_is_used_without_a_key_file(
    host_services: HostServices,
    endpoints: FakeGcpEndpoints,
    agent: AgentGcpIitAttestor,
    fake: FakeGcp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", endpoints.metadata_host)
    server = await make_server(host_services, server_config(endpoints, use_instance_metadata=True))
    try:
        result = await run_attestation(server, agent)
    finally:
        await server.close()
    assert "tag:web" in result.selector_values
    assert fake.compute_calls == 1


async def test_a_bad_signature_is_refused(
    server: ServerGcpIitAttestor, agent: AgentGcpIitAttestor
) -> None:
    def flip_signature(payload: bytes) -> bytes:
        head, body, signature = payload.split(b".")
        return b".".join((head, body, (b"A" if signature[:1] != b"A" else b"B") + signature[1:]))

    with pytest.raises(
        PermissionDeniedError, match="identity token refused: token signature is not valid"
    ):
        await run_attestation(server, agent, alter_payload=flip_signature)


async def test_an_expired_token_is_refused(
    server: ServerGcpIitAttestor, agent: AgentGcpIitAttestor, fake_clock: FakeClock
) -> None:
    payload = await agent.attestation_payload()
    await fake_clock.advance(timedelta(hours=1, seconds=61))

    async def no_challenge(challenge: bytes) -> bytes:
        raise AssertionError("gcp_iit sends no challenge")

    with pytest.raises(PermissionDeniedError, match="token has expired"):
        await server.attest(payload, no_challenge)


async def test_a_token_for_another_audience_is_refused(
    server: ServerGcpIitAttestor, agent: AgentGcpIitAttestor, fake: FakeGcp
) -> None:
    fake.audience_override = "https://other.example"
    with pytest.raises(PermissionDeniedError, match=r'has none of \["spire-gcp-node-attestor"\]'):
        await run_attestation(server, agent)


async def test_a_project_off_the_allow_list_is_refused(
    server: ServerGcpIitAttestor, agent: AgentGcpIitAttestor, fake: FakeGcp
) -> None:
    fake.add_instance(FakeInstance(name="intruder", project_id="project-999"))
    with pytest.raises(
        PermissionDeniedError, match='project ID "project-999" is not in the allow list'
    ):
        await run_attestation(server, agent)


async def test_an_unknown_key_id_is_refused_after_one_early_refresh(
    server: ServerGcpIitAttestor, fake: FakeGcp, fake_clock: FakeClock
) -> None:
    instance = fake.instances["blog"]
    good = fake.identity_token(instance, "spire-gcp-node-attestor")
    unknown = fake.issuer.issue(json.loads(_claims(good)), key_id="retired-key")

    async def no_challenge(challenge: bytes) -> bytes:
        raise AssertionError("gcp_iit sends no challenge")

    await server.attest(good.encode(), no_challenge)
    await fake_clock.advance(timedelta(seconds=30))
    with pytest.raises(PermissionDeniedError, match='key id "retired-key" is not in the key set'):
        await server.attest(unknown.encode(), no_challenge)


def _claims(token: str) -> str:
    body = token.split(".")[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


async def test_a_token_without_instance_details_is_refused(
    server: ServerGcpIitAttestor, fake: FakeGcp
) -> None:
    token = fake.identity_token(fake.instances["blog"], "spire-gcp-node-attestor", google={})

    async def no_challenge(challenge: bytes) -> bytes:
        raise AssertionError("gcp_iit sends no challenge")

    with pytest.raises(PermissionDeniedError, match="format=full"):
        await server.attest(token.encode(), no_challenge)


async def test_garbage_is_invalid_argument(server: ServerGcpIitAttestor) -> None:
    async def no_challenge(challenge: bytes) -> bytes:
        raise AssertionError("gcp_iit sends no challenge")

    with pytest.raises(InvalidArgumentError, match="unable to parse the identity token"):
        await server.attest(b"not-a-token", no_challenge)


async def test_the_key_set_is_fetched_once_for_many_attestations(
    server: ServerGcpIitAttestor, agent: AgentGcpIitAttestor, fake: FakeGcp
) -> None:
    for number in range(5):
        fake.add_instance(FakeInstance(name=f"node-{number}"))
        await run_attestation(server, agent)
    # one fetch serves every attestation (the fake counts JWKS answers through its issuer)
    assert server._jwks is not None and server._jwks.fetches == 1


async def test_a_custom_agent_path_template(
    host_services: HostServices, endpoints: FakeGcpEndpoints, agent: AgentGcpIitAttestor
) -> None:
    template = "/{{ .PluginName }}/{{ .Zone }}/{{ .InstanceName }}/{{ .ServiceAccount }}"
    server = await make_server(
        host_services, server_config(endpoints, agent_path_template=template)
    )
    try:
        result = await run_attestation(server, agent)
    finally:
        await server.close()
    assert result.agent_id.path == (
        "/spire/agent/gcp_iit/us-west1-b/blog/123456789-compute_developer.gserviceaccount.com"
    )


async def test_the_agent_asks_the_metadata_service_as_spire_does(
    agent: AgentGcpIitAttestor, endpoints: FakeGcpEndpoints, fake: FakeGcp
) -> None:
    payload = await agent.attestation_payload()
    assert payload.count(b".") == 2
    assert json.loads(_claims(payload.decode()))["aud"] == "spire-gcp-node-attestor"
    with pytest.raises(PermissionDeniedError, match="does not use challenges"):
        await agent.answer_challenge(b"x")


async def test_the_agent_says_why_the_metadata_service_gave_no_token(
    host_services: HostServices, fake: FakeGcp, tmp_path: Path
) -> None:
    async with fake.serving(tmp_path) as served:
        down = served.metadata_host
    agent = AgentGcpIitAttestor()
    await agent.configure(AgentGcpIitConfig(identity_token_host=down), host_services)
    try:
        url = f"http://{down}/computeMetadata/v1/instance/service-accounts/default/identity"
        with pytest.raises(
            UnavailableError,
            match=re.escape(f"unable to retrieve the identity token: GET {url}: cannot connect"),
        ):
            await agent.attestation_payload()
    finally:
        await agent.close()


async def test_a_server_used_before_configure_says_so() -> None:
    async def no_challenge(challenge: bytes) -> bytes:
        return b""

    with pytest.raises(PluginError, match="before configure"):
        await ServerGcpIitAttestor().attest(b"x", no_challenge)


async def test_an_unusable_key_file_fails_configure(
    host_services: HostServices, endpoints: FakeGcpEndpoints, tmp_path: Path
) -> None:
    broken = tmp_path / "sa.json"
    broken.write_text('{"type": "authorized_user"}')
    config = server_config(endpoints, use_instance_metadata=True, service_account_file=str(broken))
    server = ServerGcpIitAttestor()
    with pytest.raises(PluginError, match="is not a service account key"):
        await server.configure(config, host_services)
    await server.close()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "projectid_allow_list: required key is missing"),
        ({"projectid_allow_list": []}, "projectid_allow_list: must name at least one project"),
        (
            {"projectid_allow_list": ["p"], "agent_path_template": "/{{ .Nope }}"},
            r"agent_path_template: agent path template field \.Nope is unknown",
        ),
        (
            {"projectid_allow_list": ["p"], "max_metadata_value_size": 0},
            "max_metadata_value_size: must be positive",
        ),
    ],
)
def test_bad_server_settings_are_refused_with_their_key(
    table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ServerGcpIitConfig, table)


@pytest.mark.parametrize("config", [ServerGcpIitConfig, AgentGcpIitConfig])
def test_readme_tables_match_the_declarations(config: type[Any]) -> None:
    assert_readme_documents(README, config)


def test_loading_the_plugin_imports_no_http_library() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_nodeattestor_gcp_iit.plugin as p; "
        "p.pyspire_server_node_attestors(); "
        "p.pyspire_agent_node_attestors()"
    )
    assert loaded.isdisjoint({"aiohttp"})
