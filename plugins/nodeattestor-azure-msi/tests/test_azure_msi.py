"""azure_msi against a loopback fake of IMDS, Entra ID and Resource Manager."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pyspire_nodeattestor_azure_msi import (
    AgentAzureMsiAttestor,
    AgentAzureMsiConfig,
    ServerAzureMsiAttestor,
    ServerAzureMsiConfig,
    TenantConfig,
)
from pyspire_nodeattestor_azure_msi.testing import (
    TENANT,
    FakeAzure,
    FakeAzureEndpoints,
    FakeNic,
    FakeVm,
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
PRINCIPAL = "11111111-2222-3333-4444-555555555555"
APP, SECRET, SUBSCRIPTION = "app-1", "s3cret-value", "d5b40d61-272e-48da-beb9-05f295c42bd6"


async def no_challenge(challenge: bytes) -> bytes:
    raise AssertionError("azure_msi sends no challenge")


@pytest.fixture
def fake(fake_clock: FakeClock) -> FakeAzure:
    azure = FakeAzure(fake_clock)
    azure.apps[(TENANT, APP)] = SECRET
    azure.add_vm(
        FakeVm(
            name="blog",
            principal_id=PRINCIPAL,
            nics=(
                FakeNic(name="nic-1"),
                FakeNic(
                    name="nic-2",
                    resource_group="backend",
                    security_group=None,
                    subnets=(("backend", "vnet2", "db"), ("frontend", "vnet", "default")),
                ),
            ),
        )
    )
    return azure


@pytest_asyncio.fixture
async def endpoints(fake: FakeAzure, tmp_path: Path) -> AsyncIterator[FakeAzureEndpoints]:
    async with fake.serving(tmp_path / "tls") as served:
        yield served


def app_tenant(**changes: Any) -> TenantConfig:
    settings: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION,
        "app_id": APP,
        "app_secret": SECRET,
    }
    return TenantConfig(**{**settings, **changes})


def server_config(
    endpoints: FakeAzureEndpoints, tenants: dict[str, TenantConfig] | None = None, **changes: Any
) -> ServerAzureMsiConfig:
    settings: dict[str, Any] = {
        "tenants": tenants if tenants is not None else {TENANT: app_tenant()},
        "authority_host": endpoints.authority_host,
        "resource_manager_endpoint": endpoints.resource_manager_endpoint,
        "imds_endpoint": endpoints.imds_endpoint,
        "ca_file": endpoints.ca_file,
    }
    return ServerAzureMsiConfig(**{**settings, **changes})


async def make_server(host: HostServices, config: ServerAzureMsiConfig) -> ServerAzureMsiAttestor:
    server = ServerAzureMsiAttestor()
    await server.configure(config, host)
    return server


@pytest_asyncio.fixture
async def server(
    host_services: HostServices, endpoints: FakeAzureEndpoints
) -> AsyncIterator[ServerAzureMsiAttestor]:
    attestor = await make_server(host_services, server_config(endpoints))
    yield attestor
    await attestor.close()


@pytest_asyncio.fixture
async def agent(
    host_services: HostServices, endpoints: FakeAzureEndpoints
) -> AsyncIterator[AgentAzureMsiAttestor]:
    attestor = AgentAzureMsiAttestor()
    await attestor.configure(
        AgentAzureMsiConfig(imds_endpoint=endpoints.imds_endpoint), host_services
    )
    yield attestor
    await attestor.close()


class TestAzureMsiContract(NodeAttestorContract):
    @pytest.fixture
    def server_node_attestor(self, server: ServerAzureMsiAttestor) -> ServerAzureMsiAttestor:
        return server

    @pytest.fixture
    def agent_node_attestor(self, agent: AgentAzureMsiAttestor) -> AgentAzureMsiAttestor:
        return agent

    @pytest.fixture
    def expected_agent_id(self) -> SpiffeId:
        return SpiffeId.parse(f"spiffe://example.org/spire/agent/azure_msi/{TENANT}/{PRINCIPAL}")


async def test_selectors_come_from_the_vm_and_its_network(
    server: ServerAzureMsiAttestor, agent: AgentAzureMsiAttestor, fake: FakeAzure
) -> None:
    result = await run_attestation(server, agent)
    assert result.selector_values == (
        "network-security-group:frontend:webservers",
        f"subscription-id:{SUBSCRIPTION}",
        "virtual-network-subnet:backend:vnet2:db",
        "virtual-network-subnet:frontend:vnet:default",
        "virtual-network:backend:vnet2",
        "virtual-network:frontend:vnet",
        "vm-name:frontend:blog",
    )
    assert result.can_reattest is False
    assert fake.arm_calls == 4  # list by principal, the VM, two interfaces


async def test_the_server_vm_identity_is_used_without_app_credentials(
    host_services: HostServices, endpoints: FakeAzureEndpoints, agent: AgentAzureMsiAttestor
) -> None:
    server = await make_server(host_services, server_config(endpoints, {TENANT: TenantConfig()}))
    try:
        result = await run_attestation(server, agent)
    finally:
        await server.close()
    assert f"subscription-id:{SUBSCRIPTION}" in result.selector_values


async def test_a_tenant_not_configured_is_refused(
    host_services: HostServices, endpoints: FakeAzureEndpoints, agent: AgentAzureMsiAttestor
) -> None:
    other = "99999999-1111-2222-3333-444444444444"
    server = await make_server(host_services, server_config(endpoints, {other: app_tenant()}))
    try:
        with pytest.raises(PermissionDeniedError, match=f'tenant "{TENANT}" is not authorized'):
            await run_attestation(server, agent)
    finally:
        await server.close()


async def test_a_token_for_another_resource_is_refused(
    host_services: HostServices, endpoints: FakeAzureEndpoints, agent: AgentAzureMsiAttestor
) -> None:
    tenants = {TENANT: app_tenant(resource_id="api://spire-server")}
    server = await make_server(host_services, server_config(endpoints, tenants))
    try:
        with pytest.raises(PermissionDeniedError, match=r'has none of \["api://spire-server"\]'):
            await run_attestation(server, agent)
    finally:
        await server.close()


async def test_the_agent_asks_for_the_configured_resource(
    host_services: HostServices, endpoints: FakeAzureEndpoints
) -> None:
    tenants = {TENANT: app_tenant(resource_id="api://spire-server")}
    server = await make_server(host_services, server_config(endpoints, tenants))
    agent = AgentAzureMsiAttestor()
    await agent.configure(
        AgentAzureMsiConfig(
            imds_endpoint=endpoints.imds_endpoint, resource_id="api://spire-server"
        ),
        host_services,
    )
    try:
        result = await run_attestation(server, agent)
    finally:
        await server.close()
        await agent.close()
    assert result.agent_id.path.endswith(PRINCIPAL)


async def test_an_expired_token_is_refused_after_the_leeway(
    server: ServerAzureMsiAttestor, agent: AgentAzureMsiAttestor, fake_clock: FakeClock
) -> None:
    payload = await agent.attestation_payload()
    await fake_clock.advance(timedelta(hours=8, minutes=4))
    await server.attest(payload, no_challenge)  # within five minutes of leeway
    await fake_clock.advance(timedelta(minutes=1))
    with pytest.raises(PermissionDeniedError, match="token has expired"):
        await server.attest(payload, no_challenge)


async def test_a_bad_signature_is_refused(server: ServerAzureMsiAttestor, fake: FakeAzure) -> None:
    token = fake.msi_token(fake.vms["blog"], "https://management.azure.com/")
    head, body, signature = token.split(".")
    forged = f"{head}.{body}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(PermissionDeniedError, match="signature is not valid"):
        await server.attest(json.dumps({"token": forged}).encode(), no_challenge)


async def test_an_unknown_key_id_is_refused(
    server: ServerAzureMsiAttestor, fake: FakeAzure
) -> None:
    claims = {"aud": "https://management.azure.com/", "tid": TENANT, "sub": PRINCIPAL}
    token = fake.issuer.issue(claims, key_id="rotated-away")
    with pytest.raises(PermissionDeniedError, match='key id "rotated-away" is not in the key set'):
        await server.attest(json.dumps({"token": token}).encode(), no_challenge)


async def test_a_principal_without_a_vm_is_refused(
    server: ServerAzureMsiAttestor, fake: FakeAzure
) -> None:
    orphan = FakeVm(name="ghost")
    token = fake.msi_token(orphan, "https://management.azure.com/")
    with pytest.raises(PermissionDeniedError, match=f'has the principal "{orphan.principal_id}"'):
        await server.attest(json.dumps({"token": token}).encode(), no_challenge)


async def test_a_token_without_tenant_is_refused(
    server: ServerAzureMsiAttestor, fake: FakeAzure
) -> None:
    token = fake.msi_token(fake.vms["blog"], "https://management.azure.com/", tid=None)
    with pytest.raises(PermissionDeniedError, match="no tenant ID claim"):
        await server.attest(json.dumps({"token": token}).encode(), no_challenge)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{}", "has no token"),
        (b'{"token": 5}', "has no token"),
        (b"nope", "not JSON"),
        (b'{"token": "a.b"}', "unable to parse the MSI token"),
    ],
)
async def test_malformed_payloads_are_invalid(
    server: ServerAzureMsiAttestor, payload: bytes, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        await server.attest(payload, no_challenge)


async def test_a_wrong_app_secret_shows_as_unavailable_without_the_secret(
    host_services: HostServices, endpoints: FakeAzureEndpoints, agent: AgentAzureMsiAttestor
) -> None:
    tenants = {TENANT: app_tenant(app_secret="wrong-secret")}
    server = await make_server(host_services, server_config(endpoints, tenants))
    try:
        with pytest.raises(UnavailableError, match="HTTP 401") as caught:
            await run_attestation(server, agent)
    finally:
        await server.close()
    assert "wrong-secret" not in str(caught.value)


async def test_the_agent_says_why_imds_gave_no_token(
    host_services: HostServices, fake: FakeAzure, tmp_path: Path
) -> None:
    async with fake.serving(tmp_path) as served:
        down = served.imds_endpoint
    agent = AgentAzureMsiAttestor()
    await agent.configure(AgentAzureMsiConfig(imds_endpoint=down), host_services)
    try:
        with pytest.raises(
            UnavailableError,
            match=rf"unable to fetch the MSI token: GET {down}/metadata/identity/oauth2/token: "
            "cannot connect",
        ):
            await agent.attestation_payload()
        with pytest.raises(PermissionDeniedError, match="does not use challenges"):
            await agent.answer_challenge(b"x")
    finally:
        await agent.close()


async def test_a_server_without_credentials_or_imds_fails_configure(
    host_services: HostServices, endpoints: FakeAzureEndpoints, fake: FakeAzure, tmp_path: Path
) -> None:
    async with fake.serving(tmp_path / "gone") as gone:
        down = gone.imds_endpoint
    config = server_config(endpoints, {TENANT: TenantConfig()}, imds_endpoint=down)
    server = ServerAzureMsiAttestor()
    with pytest.raises(
        PluginError, match="has no app credentials and the server's instance metadata"
    ):
        await server.configure(config, host_services)
    await server.close()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "tenants: required key is missing"),
        ({"tenants": {}}, "tenants: must have at least one tenant"),
        ({"tenants": {"t": {"app_id": "a"}}}, r"tenants\.t\.subscription_id: missing"),
        (
            {"tenants": {"t": {}}, "agent_path_template": "/{{ .Subject }}"},
            r"agent_path_template: .* field \.Subject is unknown",
        ),
    ],
)
def test_bad_server_settings_are_refused_with_their_key(
    table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ServerAzureMsiConfig, table)


def test_the_app_secret_never_shows() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ServerAzureMsiConfig, {"tenants": {"t": {"app_secret": "hush"}}})
    assert "hush" not in str(caught.value)
    assert "hush" not in repr(app_tenant(app_secret="hush"))


@pytest.mark.parametrize("config", [ServerAzureMsiConfig, AgentAzureMsiConfig])
def test_readme_tables_match_the_declarations(config: type[Any]) -> None:
    assert_readme_documents(README, config)


def test_loading_the_plugin_imports_no_http_library() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_nodeattestor_azure_msi.plugin as p; "
        "p.pyspire_server_node_attestors(); "
        "p.pyspire_agent_node_attestors()"
    )
    assert loaded.isdisjoint({"aiohttp"})
