"""http_challenge on loopback: the SDK's contract with a real HTTP fetch from the agent's
listener, SPIRE's agent ID and selector, the listener's life, and every refusal with its
reason."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pyspire_nodeattestor_http_challenge import (
    AgentHttpChallengeAttestor,
    HttpChallengeAgentConfig,
    HttpChallengeServerConfig,
    ServerHttpChallengeAttestor,
)
from pyspire_nodeattestor_http_challenge.plugin import (
    pyspire_agent_node_attestors,
    pyspire_server_node_attestors,
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
from pyspire_sdk.plugins.node_attestor import (
    AgentNodeAttestor,
    ServerNodeAttestor,
    agent_attestation,
)
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.node_attestor_contract import (
    NodeAttestorContract,
    Transcript,
    run_attestation,
)
from pyspire_sdk.testing.readme import assert_readme_documents

README = Path(__file__).resolve().parents[1] / "README.md"
HOST = "127.0.0.1"
"""A name that reaches this host and is not ``localhost`` (which the server refuses)."""


async def make_server(host: HostServices, **settings: Any) -> ServerHttpChallengeAttestor:
    server = ServerHttpChallengeAttestor()
    await server.configure(HttpChallengeServerConfig(**settings), host)
    return server


async def make_agent(host: HostServices, **settings: Any) -> AgentHttpChallengeAttestor:
    settings.setdefault("hostname", HOST)
    agent = AgentHttpChallengeAttestor()
    await agent.configure(HttpChallengeAgentConfig(**settings), host)
    return agent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TestHttpChallengeOnLoopback(NodeAttestorContract):
    @pytest_asyncio.fixture
    async def server_node_attestor(
        self, host_services: HostServices
    ) -> AsyncIterator[ServerNodeAttestor]:
        server = await make_server(host_services)
        yield server
        await server.close()

    @pytest_asyncio.fixture
    async def agent_node_attestor(
        self, host_services: HostServices
    ) -> AsyncIterator[AgentNodeAttestor]:
        agent = await make_agent(host_services)
        yield agent
        await agent.close()

    @pytest.fixture
    def expected_agent_id(self) -> SpiffeId:
        return SpiffeId.parse(f"spiffe://example.org/spire/agent/http_challenge/{HOST}")


@pytest_asyncio.fixture
async def server(host_services: HostServices) -> AsyncIterator[ServerHttpChallengeAttestor]:
    attestor = await make_server(host_services)
    yield attestor
    await attestor.close()


# -- what the server concludes ---------------------------------------------------------------


async def test_the_agent_is_named_by_its_hostname_and_trusted_on_first_use(
    server: ServerHttpChallengeAttestor, host_services: HostServices
) -> None:
    result = await run_attestation(server, await make_agent(host_services))
    assert result.agent_id == SpiffeId.parse(
        "spiffe://example.org/spire/agent/http_challenge/127.0.0.1"
    )
    assert result.selector_values == ("hostname:127.0.0.1",)
    assert result.can_reattest is False


async def test_without_tofu_the_node_may_attest_again(host_services: HostServices) -> None:
    # Validation keeps tofu on for ports any process may open; the attestor itself only
    # reports what the setting says.
    server = await make_server(host_services, tofu=False)
    result = await run_attestation(server, await make_agent(host_services))
    assert result.can_reattest is True


async def test_dns_patterns_admit_a_matching_hostname(host_services: HostServices) -> None:
    server = await make_server(host_services, allowed_dns_patterns=(r"^127\.0\.0\.\d+$",))
    await run_attestation(server, await make_agent(host_services))


async def test_the_agent_advertises_another_port_when_told(host_services: HostServices) -> None:
    agent = await make_agent(host_services, advertised_port=8080)
    async with agent_attestation(agent):
        payload = json.loads(await agent.attestation_payload())
    assert payload == {"hostname": HOST, "agentname": "default", "port": 8080}


async def test_messages_have_spires_shape(
    server: ServerHttpChallengeAttestor, host_services: HostServices
) -> None:
    transcript = Transcript()
    await run_attestation(server, await make_agent(host_services), transcript=transcript)
    payload = json.loads(transcript.payload)
    assert list(payload) == ["hostname", "agentname", "port"]
    assert transcript.payload.startswith(b'{"hostname":"127.0.0.1","agentname":"default","port":')
    [(challenge, answer)] = transcript.exchanges
    nonce = json.loads(challenge)["nonce"]
    assert list(json.loads(challenge)) == ["nonce"]
    assert len(nonce) == 44 and nonce.endswith("=")
    assert answer == b"\n"


# -- refusals ---------------------------------------------------------------------------------


async def refused_before_any_challenge(
    server: ServerHttpChallengeAttestor,
    agent: AgentHttpChallengeAttestor,
    error: type[Exception],
    message: str,
    **options: Any,
) -> None:
    transcript = Transcript()
    with pytest.raises(error, match=message):
        await run_attestation(server, agent, transcript=transcript, **options)
    assert transcript.exchanges == []


async def test_a_hostname_outside_the_patterns_is_refused(host_services: HostServices) -> None:
    server = await make_server(host_services, allowed_dns_patterns=(r"^p[0-9]\.example\.org$",))
    await refused_before_any_challenge(
        server,
        await make_agent(host_services),
        PermissionDeniedError,
        "hostname '127.0.0.1' is not allowed to attest: it matches none of allowed_dns_patterns",
    )


@pytest.mark.parametrize(
    ("hostname", "message"),
    [
        ("localhost", "you can not use localhost as a hostname"),
        ("evil.org:80@127.0.0.1", "cannot name an agent"),
        ("a/b", "cannot name an agent"),
    ],
)
async def test_hostnames_that_name_no_single_host_are_refused(
    server: ServerHttpChallengeAttestor, host_services: HostServices, hostname: str, message: str
) -> None:
    def rename(payload: bytes) -> bytes:
        return json.dumps({**json.loads(payload), "hostname": hostname}).encode()

    await refused_before_any_challenge(
        server,
        await make_agent(host_services),
        PermissionDeniedError,
        message,
        alter_payload=rename,
    )


async def test_ports_the_server_does_not_allow_are_refused(host_services: HostServices) -> None:
    agent = await make_agent(host_services)
    required = await make_server(host_services, required_port=80)
    await refused_before_any_challenge(
        required, agent, InvalidArgumentError, r"required_port is 80"
    )
    root_only = await make_server(host_services, allow_non_root_ports=False)
    await refused_before_any_challenge(
        root_only, agent, InvalidArgumentError, r"is not allowed to be >= 1024"
    )


async def test_a_bad_agent_name_is_refused(
    server: ServerHttpChallengeAttestor, host_services: HostServices
) -> None:
    def rename(payload: bytes) -> bytes:
        return json.dumps({**json.loads(payload), "agentname": "../admin"}).encode()

    await refused_before_any_challenge(
        server,
        await make_agent(host_services),
        InvalidArgumentError,
        "agent name '../admin' is not valid",
        alter_payload=rename,
    )


async def test_serving_another_nonce_is_refused(
    server: ServerHttpChallengeAttestor, host_services: HostServices
) -> None:
    """A process that saw an earlier challenge (and serves its nonce) does not attest."""
    agent = await make_agent(host_services)
    async with agent_attestation(agent):
        payload = await agent.attestation_payload()

        async def stale(challenge: bytes) -> bytes:
            return await agent.answer_challenge(b'{"nonce":"c3RhbGUtbm9uY2U="}')

        with pytest.raises(PermissionDeniedError, match="did not answer the expected nonce"):
            await server.attest(payload, stale)


async def test_nobody_listening_is_refused(
    server: ServerHttpChallengeAttestor, host_services: HostServices
) -> None:
    agent = await make_agent(host_services)
    transcript = Transcript()
    await run_attestation(server, agent, transcript=transcript)

    async def replay(challenge: bytes) -> bytes:
        return b"\n"

    with pytest.raises(PermissionDeniedError, match=r"cannot fetch http://127\.0\.0\.1:"):
        await server.attest(transcript.payload, replay)


async def test_another_agent_name_on_the_host_is_not_found(
    server: ServerHttpChallengeAttestor, host_services: HostServices
) -> None:
    def rename(payload: bytes) -> bytes:
        return json.dumps({**json.loads(payload), "agentname": "other"}).encode()

    with pytest.raises(PermissionDeniedError, match="answered HTTP 404"):
        await run_attestation(server, await make_agent(host_services), alter_payload=rename)


# -- the agent's listener ---------------------------------------------------------------------


async def get(url: str, method: str = "GET") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, allow_redirects=False) as response,
    ):
        return response.status, await response.text()


async def test_the_listener_serves_the_nonce_only_at_its_path_and_only_once_asked(
    host_services: HostServices,
) -> None:
    agent = await make_agent(host_services, agentname="edge-1")
    async with agent_attestation(agent):
        port = json.loads(await agent.attestation_payload())["port"]
        base = f"http://127.0.0.1:{port}/.well-known/spiffe/nodeattestor/http_challenge"
        assert (await get(f"{base}/edge-1/challenge"))[0] == 404
        assert await agent.answer_challenge(b'{"nonce":"bm9uY2U="}') == b"\n"
        assert await get(f"{base}/edge-1/challenge") == (200, "bm9uY2U=\n")
        assert (await get(f"{base}/default/challenge"))[0] == 404
        assert (await get(f"{base}/edge-1/challenge", "POST"))[0] == 405
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"{base}/edge-1/challenge")


async def test_a_fixed_port_is_listened_on_attestation_after_attestation(
    server: ServerHttpChallengeAttestor, host_services: HostServices
) -> None:
    port = free_port()
    agent = await make_agent(host_services, port=port)
    for _ in range(3):
        transcript = Transcript()
        await run_attestation(server, agent, transcript=transcript)
        assert json.loads(transcript.payload)["port"] == port


async def test_a_port_in_use_fails_the_attestation_naming_it(host_services: HostServices) -> None:
    with socket.socket(socket.AF_INET6) as holder:
        holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        holder.bind(("::", 0))
        holder.listen()
        port = holder.getsockname()[1]
        agent = await make_agent(host_services, port=port)
        with pytest.raises(UnavailableError, match=f"cannot listen on port {port}"):
            async with agent_attestation(agent):
                pass


async def test_the_listener_closes_when_its_owner_is_cancelled(
    host_services: HostServices,
) -> None:
    agent = await make_agent(host_services)
    listening = asyncio.Event()
    ports: list[int] = []

    async def attest_forever() -> None:
        async with agent_attestation(agent):
            ports.append(json.loads(await agent.attestation_payload())["port"])
            listening.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(attest_forever())
    await listening.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", ports[0]), timeout=2),
    ):
        pass


async def test_the_payload_needs_an_open_scope(host_services: HostServices) -> None:
    agent = await make_agent(host_services)
    with pytest.raises(PluginError, match="no attestation scope is open"):
        await agent.attestation_payload()


@pytest.mark.parametrize(
    "challenge", [b'{"nonce":"has space"}', b'{"nonce":"' + b"A" * 65 + b'"}', b"{}"]
)
async def test_the_agent_serves_only_a_plausible_nonce(
    host_services: HostServices, challenge: bytes
) -> None:
    agent = await make_agent(host_services)
    async with agent_attestation(agent):
        with pytest.raises(InvalidArgumentError, match="challenge"):
            await agent.answer_challenge(challenge)


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ({"tofu": False}, "tofu", "cannot be turned off while ports from 1024 up"),
        ({"tofu": False, "required_port": 8080}, "tofu", "cannot be turned off"),
        ({"required_port": 0}, "required_port", "must be a TCP port"),
        ({"allowed_dns_patterns": ["("]}, "allowed_dns_patterns[0]", "does not compile"),
    ],
)
def test_bad_server_settings_are_named_with_their_key(
    table: dict[str, object], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(HttpChallengeServerConfig, table, path="server.plugins.node_attestor.x")
    [issue] = raised.value.issues
    assert issue.path == f"server.plugins.node_attestor.x.{path}"
    assert message in issue.message


@pytest.mark.parametrize(
    "table",
    [
        {"tofu": False, "required_port": 80},
        {"tofu": False, "allow_non_root_ports": False},
        {"tofu": False, "required_port": 443, "allow_non_root_ports": True},
    ],
)
def test_tofu_may_be_off_when_only_privileged_ports_are_allowed(table: dict[str, object]) -> None:
    assert load_config(HttpChallengeServerConfig, table).tofu is False


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ({"agentname": "1st"}, "agentname", "a letter, then letters"),
        ({"agentname": "a" * 33}, "agentname", "at most 32"),
        ({"hostname": "localhost"}, "hostname", "localhost"),
        ({"port": 70000}, "port", "must be a TCP port"),
        ({"advertised_port": -1}, "advertised_port", "must be a TCP port"),
    ],
)
def test_bad_agent_settings_are_named_with_their_key(
    table: dict[str, object], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(HttpChallengeAgentConfig, table, path="agent.plugins.node_attestor.x")
    [issue] = raised.value.issues
    assert issue.path == f"agent.plugins.node_attestor.x.{path}"
    assert message in issue.message


async def test_the_agent_defaults_to_this_hosts_name(host_services: HostServices) -> None:
    agent = AgentHttpChallengeAttestor()
    await agent.configure(HttpChallengeAgentConfig(), host_services)
    async with agent_attestation(agent):
        payload = json.loads(await agent.attestation_payload())
    assert payload["hostname"] == socket.gethostname()


def test_loading_the_plugin_does_not_load_aiohttp() -> None:
    loaded = top_level_modules_imported_by("import pyspire_nodeattestor_http_challenge.plugin")
    assert loaded.isdisjoint({"aiohttp"})


def test_both_halves_register_under_one_name() -> None:
    [server] = pyspire_server_node_attestors()
    [agent] = pyspire_agent_node_attestors()
    assert server.name == agent.name == "http_challenge"
    assert isinstance(server.factory(), ServerNodeAttestor)
    assert isinstance(agent.factory(), AgentNodeAttestor)


def test_the_readme_shows_both_settings_tables() -> None:
    assert_readme_documents(README, HttpChallengeServerConfig, HttpChallengeAgentConfig)
