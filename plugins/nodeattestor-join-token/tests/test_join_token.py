from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from pyspire_nodeattestor_join_token import (
    AgentJoinTokenAttestor,
    AgentJoinTokenConfig,
    ServerJoinTokenAttestor,
)

from pyspire_sdk.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PluginError,
)
from pyspire_sdk.model import JoinToken
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.node_attestor_contract import NodeAttestorContract, run_attestation
from pyspire_sdk.testing.readme import assert_readme_documents

TOKEN = "5c1b5f2e-7a0e-4f4f-9d0c-1f2a3b4c5d6e"


class MemoryJoinTokens:
    """The host's join-token store, in memory, with the consume-once semantics."""

    def __init__(self) -> None:
        self.tokens: dict[str, JoinToken] = {}

    async def consume(self, token: str) -> JoinToken:
        try:
            return self.tokens.pop(token)
        except KeyError:
            raise NotFoundError("no such join token") from None


@pytest.fixture
def join_tokens(fake_clock: FakeClock) -> MemoryJoinTokens:
    store = MemoryJoinTokens()
    store.tokens[TOKEN] = JoinToken(TOKEN, fake_clock.now() + timedelta(minutes=10))
    return store


@pytest.fixture
def server_host(host_services: HostServices, join_tokens: MemoryJoinTokens) -> HostServices:
    return dataclasses.replace(host_services, join_tokens=join_tokens)


@pytest.fixture
async def server(server_host: HostServices) -> AsyncIterator[ServerJoinTokenAttestor]:
    attestor = ServerJoinTokenAttestor()
    await attestor.configure(NoConfig(), server_host)
    yield attestor
    await attestor.close()


async def make_agent(host: HostServices, token: str = TOKEN) -> AgentJoinTokenAttestor:
    agent = AgentJoinTokenAttestor()
    await agent.configure(AgentJoinTokenConfig(token=token), host)
    return agent


class TestJoinTokenContract(NodeAttestorContract):
    @pytest.fixture
    async def server_node_attestor(
        self, server: ServerJoinTokenAttestor
    ) -> ServerJoinTokenAttestor:
        return server

    @pytest.fixture
    async def agent_node_attestor(self, host_services: HostServices) -> AgentJoinTokenAttestor:
        return await make_agent(host_services)

    @pytest.fixture
    def expected_agent_id(self) -> SpiffeId:
        return SpiffeId.parse(f"spiffe://example.org/spire/agent/join_token/{TOKEN}")


async def test_a_token_works_once(
    server: ServerJoinTokenAttestor, host_services: HostServices
) -> None:
    agent = await make_agent(host_services)
    first = await run_attestation(server, agent)
    assert first.can_reattest is False
    assert first.selector_values == ()
    with pytest.raises(PermissionDeniedError, match="does not exist or has already been used"):
        await run_attestation(server, agent)


async def test_an_expired_token_is_refused(
    server: ServerJoinTokenAttestor, host_services: HostServices, fake_clock: FakeClock
) -> None:
    await fake_clock.advance(timedelta(minutes=11))
    with pytest.raises(PermissionDeniedError, match="join token expired"):
        await run_attestation(server, await make_agent(host_services))


async def test_an_unknown_token_is_refused(
    server: ServerJoinTokenAttestor, host_services: HostServices
) -> None:
    with pytest.raises(PermissionDeniedError, match="does not exist"):
        await run_attestation(server, await make_agent(host_services, token="unknown"))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "missing"),
        (b"\xff\xfe", "UTF-8"),
        (b"a/b", "path segment"),
        (b"x" * 300, "longer than"),
    ],
)
async def test_malformed_payloads_are_invalid(
    server: ServerJoinTokenAttestor, payload: bytes, message: str
) -> None:
    async def no_challenge(_: bytes) -> bytes:
        raise AssertionError("join_token sends no challenge")

    with pytest.raises(InvalidArgumentError, match=message):
        await server.attest(payload, no_challenge)


async def test_server_half_needs_the_host_store(host_services: HostServices) -> None:
    with pytest.raises(PluginError, match="join-token store"):
        await ServerJoinTokenAttestor().configure(NoConfig(), host_services)


async def test_agent_without_a_token_says_how_to_give_one(host_services: HostServices) -> None:
    agent = await make_agent(host_services, token="")
    with pytest.raises(PluginError, match="-joinToken"):
        await agent.attestation_payload()


def test_the_readme_documents_the_agent_settings() -> None:
    assert_readme_documents(Path(__file__).resolve().parents[1] / "README.md", AgentJoinTokenConfig)
