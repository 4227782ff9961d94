"""The node attestor contract suite, proved on a small HMAC challenge/response attestor.

The attestor exists only here. The agent names its node in a JSON payload; the server answers
with a random nonce; the agent proves it holds the shared secret with
``HMAC-SHA256(secret, node || nonce)``. A second, credulous attestor that believes any payload
shows that the suite fails a plugin that breaks the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, PluginError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import (
    AgentNodeAttestor,
    AttestationPeer,
    Challenger,
    ServerNodeAttestor,
    agent_id,
    current_peer,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.node_attestor_contract import (
    LOOPBACK_PEER,
    MAX_CHALLENGES,
    NodeAttestorContract,
    Transcript,
    flip_middle_byte,
    run_attestation,
)

PLUGIN_NAME = "hmac"


@dataclass(frozen=True, kw_only=True)
class HmacServerConfig:
    secret: bytes
    rounds: int = 1


@dataclass(frozen=True, kw_only=True)
class HmacAgentConfig:
    secret: bytes
    node: str


def _mac(secret: bytes, node: str, nonce: bytes) -> bytes:
    return hmac.new(secret, node.encode() + b"\x00" + nonce, hashlib.sha256).hexdigest().encode()


class HmacServerAttestor:
    def __init__(self) -> None:
        self._secret = b""
        self._rounds = 1
        self._trust_domain: TrustDomain | None = None

    async def configure(self, config: Any, host: HostServices) -> None:
        assert isinstance(config, HmacServerConfig)
        self._secret = config.secret
        self._rounds = config.rounds
        self._trust_domain = host.trust_domain

    async def close(self) -> None:
        self._secret = b""

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        assert self._trust_domain is not None
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidArgumentError("payload is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("node"), str):
            raise InvalidArgumentError("payload field node is missing or not a string")
        node: str = document["node"]
        if not node or not node.isalnum():
            raise InvalidArgumentError("payload field node must be alphanumeric")
        for _ in range(self._rounds):
            nonce = secrets.token_bytes(32)
            answer = await challenge(nonce)
            if not hmac.compare_digest(answer, _mac(self._secret, node, nonce)):
                raise PermissionDeniedError(f"challenge answer for node {node!r} does not verify")
        return AttestationResult(
            agent_id=agent_id(self._trust_domain, PLUGIN_NAME, node),
            selector_values=(f"node:{node}",),
            can_reattest=True,
        )


class HmacAgentAttestor:
    def __init__(self) -> None:
        self._secret = b""
        self._node = ""

    async def configure(self, config: Any, host: HostServices) -> None:
        assert isinstance(config, HmacAgentConfig)
        self._secret = config.secret
        self._node = config.node

    async def close(self) -> None:
        self._secret = b""

    async def attestation_payload(self) -> bytes:
        return json.dumps({"node": self._node}).encode()

    async def answer_challenge(self, challenge: bytes) -> bytes:
        if len(challenge) != 32:
            raise InvalidArgumentError("challenge must be a 32-byte nonce")
        return _mac(self._secret, self._node, challenge)


class CredulousServerAttestor(HmacServerAttestor):
    """Breaks the contract: believes whatever node the payload names, garbage included."""

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        assert self._trust_domain is not None
        node = hashlib.sha256(payload).hexdigest()[:16]
        return AttestationResult(agent_id=agent_id(self._trust_domain, PLUGIN_NAME, node))


SECRET = b"shared-secret-for-tests"


async def _server(host: HostServices, *, rounds: int = 1) -> HmacServerAttestor:
    server = HmacServerAttestor()
    await server.configure(HmacServerConfig(secret=SECRET, rounds=rounds), host)
    return server


async def _agent(host: HostServices, *, secret: bytes = SECRET) -> HmacAgentAttestor:
    agent = HmacAgentAttestor()
    await agent.configure(HmacAgentConfig(secret=secret, node="node1"), host)
    return agent


class TestHmacAttestorPassesTheContract(NodeAttestorContract):
    @pytest.fixture
    async def server_node_attestor(
        self, host_services: HostServices
    ) -> AsyncIterator[ServerNodeAttestor]:
        server = await _server(host_services)
        yield server
        await server.close()

    @pytest.fixture
    async def agent_node_attestor(
        self, host_services: HostServices
    ) -> AsyncIterator[AgentNodeAttestor]:
        agent = await _agent(host_services)
        yield agent
        await agent.close()

    @pytest.fixture
    def expected_agent_id(self) -> SpiffeId:
        return SpiffeId.parse("spiffe://example.org/spire/agent/hmac/node1")


class TestThreeRoundHmacAttestorPassesTheContract(TestHmacAttestorPassesTheContract):
    @pytest.fixture
    async def server_node_attestor(
        self, host_services: HostServices
    ) -> AsyncIterator[ServerNodeAttestor]:
        server = await _server(host_services, rounds=3)
        yield server
        await server.close()


def test_the_test_attestors_satisfy_the_protocols() -> None:
    assert isinstance(HmacServerAttestor(), ServerNodeAttestor)
    assert isinstance(HmacAgentAttestor(), AgentNodeAttestor)


async def test_run_attestation_records_every_exchange(host_services: HostServices) -> None:
    server = await _server(host_services, rounds=3)
    agent = await _agent(host_services)
    transcript = Transcript()

    result = await run_attestation(server, agent, transcript=transcript)

    assert result.selector_values == ("node:node1",)
    assert json.loads(transcript.payload) == {"node": "node1"}
    assert len(transcript.exchanges) == 3
    nonces = {challenge for challenge, _ in transcript.exchanges}
    assert len(nonces) == 3
    for challenge, answer in transcript.exchanges:
        assert answer == _mac(SECRET, "node1", challenge)


async def test_an_agent_with_the_wrong_secret_is_denied(host_services: HostServices) -> None:
    server = await _server(host_services)
    agent = await _agent(host_services, secret=b"another-secret")

    with pytest.raises(PermissionDeniedError, match="does not verify"):
        await run_attestation(server, agent)


async def test_run_attestation_stops_a_runaway_server(host_services: HostServices) -> None:
    server = await _server(host_services, rounds=MAX_CHALLENGES + 1)
    agent = await _agent(host_services)

    with pytest.raises(PluginError, match="more than 16 challenges"):
        await run_attestation(server, agent)


async def test_run_attestation_refuses_overlapping_challenges(
    host_services: HostServices,
) -> None:
    class OverlappingServer(HmacServerAttestor):
        async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
            await asyncio.gather(challenge(b"a" * 32), challenge(b"b" * 32))
            raise AssertionError("overlapping challenges were carried")

    server = OverlappingServer()
    await server.configure(HmacServerConfig(secret=SECRET), host_services)

    class SlowAgent(HmacAgentAttestor):
        async def answer_challenge(self, challenge: bytes) -> bytes:
            await asyncio.sleep(0)
            return await super().answer_challenge(challenge)

    agent = SlowAgent()
    await agent.configure(HmacAgentConfig(secret=SECRET, node="node1"), host_services)

    with pytest.raises(PluginError, match="before the last was answered"):
        await run_attestation(server, agent)


def test_flip_middle_byte_changes_exactly_one_byte() -> None:
    assert flip_middle_byte(b"abcde") == b"abbde"
    assert flip_middle_byte(b"") == b"\x01"
    data = secrets.token_bytes(33)
    flipped = flip_middle_byte(data)
    assert len(flipped) == len(data)
    assert sum(a != b for a, b in zip(data, flipped, strict=True)) == 1


class TestTheSuiteCatchesACredulousAttestor:
    """The contract's tests fail for an attestor that believes anything."""

    async def test_garbage_payload_test_fails(self, host_services: HostServices) -> None:
        server = CredulousServerAttestor()
        await server.configure(HmacServerConfig(secret=SECRET), host_services)

        with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
            await NodeAttestorContract().test_garbage_payload_is_refused(server, b"garbage")

    async def test_tampered_payload_test_fails(self, host_services: HostServices) -> None:
        server = CredulousServerAttestor()
        await server.configure(HmacServerConfig(secret=SECRET), host_services)
        agent = await _agent(host_services)

        with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
            await NodeAttestorContract().test_tampered_payload_is_refused_and_leaves_no_trace(
                server, agent, None
            )

    async def test_a_foreign_agent_id_fails_the_handshake_test(
        self, host_services: HostServices
    ) -> None:
        class ForeignServer(HmacServerAttestor):
            async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
                return AttestationResult(agent_id=agent_id("other.org", PLUGIN_NAME, "node1"))

        server = ForeignServer()
        await server.configure(HmacServerConfig(secret=SECRET), host_services)
        agent = await _agent(host_services)

        with pytest.raises(AssertionError, match="is not under"):
            await NodeAttestorContract().test_honest_handshake_names_an_agent_of_the_trust_domain(
                server, agent, None, host_services.trust_domain
            )

    async def test_an_ignored_challenge_answer_fails_the_tamper_test(
        self, host_services: HostServices
    ) -> None:
        class IgnoresAnswers(HmacServerAttestor):
            async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
                await challenge(secrets.token_bytes(32))
                assert self._trust_domain is not None
                return AttestationResult(agent_id=agent_id(self._trust_domain, "hmac", "node1"))

        server = IgnoresAnswers()
        await server.configure(HmacServerConfig(secret=SECRET), host_services)
        agent = await _agent(host_services)

        with pytest.raises(pytest.fail.Exception, match="accepted a tampered challenge answer"):
            await NodeAttestorContract().test_tampered_challenge_answer_is_refused(server, agent)

    async def test_a_fixed_challenge_fails_the_replay_test(
        self, host_services: HostServices
    ) -> None:
        class FixedNonce(HmacServerAttestor):
            """Asks the same question every time, so yesterday's answer still works."""

            async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
                assert self._trust_domain is not None
                answer = await challenge(b"n" * 32)
                if not hmac.compare_digest(answer, _mac(self._secret, "node1", b"n" * 32)):
                    raise PermissionDeniedError("challenge answer does not verify")
                return AttestationResult(agent_id=agent_id(self._trust_domain, "hmac", "node1"))

        server = FixedNonce()
        await server.configure(HmacServerConfig(secret=SECRET), host_services)
        agent = await _agent(host_services)

        with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
            await NodeAttestorContract().test_replayed_challenge_answers_are_refused(server, agent)

    async def test_a_reattestable_node_named_anew_fails_the_reattest_test(
        self, host_services: HostServices
    ) -> None:
        class NewNameEachTime(HmacServerAttestor):
            async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
                await super().attest(payload, challenge)
                assert self._trust_domain is not None
                return AttestationResult(
                    agent_id=agent_id(self._trust_domain, "hmac", secrets.token_hex(4)),
                    can_reattest=True,
                )

        server = NewNameEachTime()
        await server.configure(HmacServerConfig(secret=SECRET), host_services)
        agent = await _agent(host_services)

        with pytest.raises(AssertionError):
            await NodeAttestorContract().test_a_reattestable_node_attests_again_as_itself(
                server, agent
            )

    async def test_a_refusal_without_a_reason_fails_the_garbage_test(
        self, host_services: HostServices
    ) -> None:
        class Terse(HmacServerAttestor):
            async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
                raise InvalidArgumentError("")

        server = Terse()
        await server.configure(HmacServerConfig(secret=SECRET), host_services)

        with pytest.raises(AssertionError, match="gives no reason"):
            await NodeAttestorContract().test_garbage_payload_is_refused(server, b"garbage")


async def test_run_attestation_tells_the_server_who_the_agent_is(
    host_services: HostServices,
) -> None:
    seen: list[AttestationPeer] = []

    class Recording(HmacServerAttestor):
        async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
            seen.append(current_peer())
            return await super().attest(payload, challenge)

    server = Recording()
    await server.configure(HmacServerConfig(secret=SECRET), host_services)
    agent = await _agent(host_services)

    await run_attestation(server, agent)
    await run_attestation(server, agent, peer=AttestationPeer(address="192.0.2.1"))

    assert seen == [LOOPBACK_PEER, AttestationPeer(address="192.0.2.1")]


async def test_run_attestation_closes_the_agent_scope_after_a_refusal(
    host_services: HostServices,
) -> None:
    events: list[str] = []

    class Scoped(HmacAgentAttestor):
        def attestation_scope(self) -> contextlib.AbstractAsyncContextManager[None]:
            @contextlib.asynccontextmanager
            async def scope() -> AsyncIterator[None]:
                events.append("enter")
                try:
                    yield
                finally:
                    events.append("exit")

            return scope()

        async def answer_challenge(self, challenge: bytes) -> bytes:
            events.append("answer")
            return await super().answer_challenge(challenge)

    server = await _server(host_services)
    agent = Scoped()
    await agent.configure(HmacAgentConfig(secret=b"wrong", node="node1"), host_services)

    with pytest.raises(PermissionDeniedError):
        await run_attestation(server, agent)

    assert events == ["enter", "answer", "exit"]
