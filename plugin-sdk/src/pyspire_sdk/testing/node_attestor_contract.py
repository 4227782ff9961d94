"""The contract every node attestor pair keeps, as tests a plugin's test module inherits.

Subclass :class:`NodeAttestorContract` and provide two fixtures, a configured server half and a
configured agent half that together make one honest handshake (the agent's evidence is what the
server accepts: a join token the server knows, a certificate its CA signed, ...)::

    class TestX509PopAttestor(NodeAttestorContract):
        @pytest_asyncio.fixture
        async def server_node_attestor(self, host_services, ca_files):
            server = X509PopServer()
            await server.configure(ServerConfig(ca_bundle_path=ca_files.bundle), host_services)
            yield server
            await server.close()

        @pytest_asyncio.fixture
        async def agent_node_attestor(self, host_services, ca_files):
            ...

        @pytest.fixture
        def expected_agent_id(self, ca_files):
            return SpiffeId.parse(f"spiffe://example.org/spire/agent/x509pop/{ca_files.sha1}")

The handshake runs in memory through :func:`run_attestation`, which plugin tests can also call
directly; it enters the agent half's attestation scope and tells the server half who the agent
is (``peer``), as a host does. The server's trust domain is ``host_services.trust_domain``
unless the subclass overrides the ``attestation_trust_domain`` fixture; the server half sees
the agent at :data:`LOOPBACK_PEER`.
"""

from __future__ import annotations

__all__ = [
    "LOOPBACK_PEER",
    "MAX_CHALLENGES",
    "NodeAttestorContract",
    "Transcript",
    "flip_middle_byte",
    "run_attestation",
]

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, PluginError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import (
    AgentNodeAttestor,
    AttestationPeer,
    ServerNodeAttestor,
    agent_attestation,
    attesting_peer,
    check_agent_id,
    is_agent_id,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

MAX_CHALLENGES = 16
"""More challenges than this in one handshake is taken as a runaway server attestor."""

REFUSALS = (PermissionDeniedError, InvalidArgumentError)
"""How a server attestor refuses evidence: not holding, or not parseable."""

LOOPBACK_PEER = AttestationPeer(address="127.0.0.1")
"""The agent as the contract's handshakes present it to the server half."""


@dataclass
class Transcript:
    """What crossed the wire in one handshake: the payload sent and each (challenge, answer)."""

    payload: bytes = b""
    exchanges: list[tuple[bytes, bytes]] = field(default_factory=list)


def flip_middle_byte(data: bytes) -> bytes:
    """``data`` with the lowest bit of its middle byte flipped; ``b"\\x01"`` for empty data."""
    if not data:
        return b"\x01"
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


async def run_attestation(
    server: ServerNodeAttestor,
    agent: AgentNodeAttestor,
    *,
    transcript: Transcript | None = None,
    alter_payload: Callable[[bytes], bytes] | None = None,
    alter_answer: Callable[[bytes], bytes] | None = None,
    peer: AttestationPeer = LOOPBACK_PEER,
) -> AttestationResult:
    """Run one handshake between ``agent`` and ``server`` in memory, as the host would.

    The agent's attestation scope is entered first and left after the server's verdict; the
    agent's payload goes to ``server.attest``, which sees ``peer`` as
    :func:`~pyspire_sdk.plugins.node_attestor.current_peer`; each challenge the server sends is
    answered by ``agent.answer_challenge``. ``alter_payload`` and ``alter_answer`` let a test
    tamper with what crosses the wire; ``transcript`` records it (after tampering). Whatever
    the server raises propagates. More than :data:`MAX_CHALLENGES` challenges, or a challenge
    sent while another is unanswered, raise :class:`~pyspire_sdk.errors.PluginError`.
    """
    record = transcript if transcript is not None else Transcript()
    async with agent_attestation(agent):
        payload = await agent.attestation_payload()
        if alter_payload is not None:
            payload = alter_payload(payload)
        record.payload = payload
        in_flight = False

        async def challenge(data: bytes) -> bytes:
            nonlocal in_flight
            if in_flight:
                raise PluginError(
                    "server node attestor sent a challenge before the last was answered"
                )
            if len(record.exchanges) >= MAX_CHALLENGES:
                raise PluginError(
                    f"server node attestor sent more than {MAX_CHALLENGES} challenges in one "
                    "handshake"
                )
            in_flight = True
            try:
                answer = await agent.answer_challenge(data)
            finally:
                in_flight = False
            if alter_answer is not None:
                answer = alter_answer(answer)
            record.exchanges.append((data, answer))
            return answer

        with attesting_peer(peer):
            return await server.attest(payload, challenge)


async def _refuse_any_challenge(challenge: bytes) -> bytes:
    return b"\x00garbage-answer\xff"


GARBAGE_PAYLOADS: tuple[bytes, ...] = (
    b"",
    b"\x00\xff\x00garbage\xfe",
    b"{}",
    b"null",
    b"[1, 2, 3]",
    b'{"certificates": ["not base64!"], "token": 7}',
    b"\xff" * 70_000,
)
"""Payloads no attestor may accept."""


class NodeAttestorContract:
    """Tests every node attestor pair must pass.

    The subclass provides ``server_node_attestor`` and ``agent_node_attestor`` (configured, for
    one honest handshake, closed after the test) and may provide ``expected_agent_id``.
    """

    @pytest.fixture
    def server_node_attestor(self) -> ServerNodeAttestor:
        """The configured server half; the subclass must override this."""
        pytest.fail(
            "a NodeAttestorContract subclass must provide the 'server_node_attestor' fixture"
        )

    @pytest.fixture
    def agent_node_attestor(self) -> AgentNodeAttestor:
        """The configured agent half, able to pass the server half; the subclass overrides it."""
        pytest.fail(
            "a NodeAttestorContract subclass must provide the 'agent_node_attestor' fixture"
        )

    @pytest.fixture
    def expected_agent_id(self) -> SpiffeId | None:
        """The agent ID the honest handshake must yield; ``None`` checks only its shape."""
        return None

    @pytest.fixture
    def attestation_trust_domain(self, host_services: HostServices) -> TrustDomain:
        """The trust domain the server half was configured for."""
        return host_services.trust_domain

    @pytest.mark.asyncio
    async def test_honest_handshake_names_an_agent_of_the_trust_domain(
        self,
        server_node_attestor: ServerNodeAttestor,
        agent_node_attestor: AgentNodeAttestor,
        expected_agent_id: SpiffeId | None,
        attestation_trust_domain: TrustDomain,
    ) -> None:
        result = await run_attestation(server_node_attestor, agent_node_attestor)

        assert isinstance(result, AttestationResult)
        assert is_agent_id(result.agent_id, attestation_trust_domain), (
            f"{result.agent_id} is not under spiffe://{attestation_trust_domain}/spire/agent/"
        )
        assert check_agent_id(result, attestation_trust_domain) == result.agent_id
        if expected_agent_id is not None:
            assert result.agent_id == expected_agent_id
        assert isinstance(result.selector_values, tuple)
        for value in result.selector_values:
            assert isinstance(value, str), f"selector value {value!r} is not a string"
            assert value, "a selector value is empty"
        assert isinstance(result.can_reattest, bool)

    @pytest.mark.asyncio
    async def test_tampered_payload_is_refused_and_leaves_no_trace(
        self,
        server_node_attestor: ServerNodeAttestor,
        agent_node_attestor: AgentNodeAttestor,
        expected_agent_id: SpiffeId | None,
    ) -> None:
        for tamper in (flip_middle_byte, lambda payload: payload[: len(payload) // 2]):
            with pytest.raises(REFUSALS):
                await run_attestation(
                    server_node_attestor, agent_node_attestor, alter_payload=tamper
                )

        # A refusal must not spend the agent's evidence: the honest handshake still works.
        result = await run_attestation(server_node_attestor, agent_node_attestor)
        if expected_agent_id is not None:
            assert result.agent_id == expected_agent_id

    @pytest.mark.asyncio
    async def test_tampered_challenge_answer_is_refused(
        self,
        server_node_attestor: ServerNodeAttestor,
        agent_node_attestor: AgentNodeAttestor,
    ) -> None:
        transcript = Transcript()
        try:
            await run_attestation(
                server_node_attestor,
                agent_node_attestor,
                transcript=transcript,
                alter_answer=flip_middle_byte,
            )
        except REFUSALS:
            assert transcript.exchanges, "refused before any challenge, with an honest payload"
            return
        if not transcript.exchanges:
            pytest.skip("this attestor sends no challenge")
        pytest.fail("the server accepted a tampered challenge answer")

    @pytest.mark.asyncio
    async def test_empty_challenge_answer_is_refused(
        self,
        server_node_attestor: ServerNodeAttestor,
        agent_node_attestor: AgentNodeAttestor,
    ) -> None:
        transcript = Transcript()
        try:
            await run_attestation(
                server_node_attestor,
                agent_node_attestor,
                transcript=transcript,
                alter_answer=lambda answer: b"",
            )
        except REFUSALS:
            assert transcript.exchanges, "refused before any challenge, with an honest payload"
            return
        if not transcript.exchanges:
            pytest.skip("this attestor sends no challenge")
        pytest.fail("the server accepted an empty challenge answer")

    @pytest.mark.parametrize("payload", GARBAGE_PAYLOADS, ids=lambda p: repr(p[:12]))
    @pytest.mark.asyncio
    async def test_garbage_payload_is_refused(
        self, server_node_attestor: ServerNodeAttestor, payload: bytes
    ) -> None:
        with attesting_peer(LOOPBACK_PEER), pytest.raises(REFUSALS) as refused:
            await server_node_attestor.attest(payload, _refuse_any_challenge)
        assert str(refused.value), "the refusal gives no reason"

    @pytest.mark.asyncio
    async def test_replayed_challenge_answers_are_refused(
        self,
        server_node_attestor: ServerNodeAttestor,
        agent_node_attestor: AgentNodeAttestor,
    ) -> None:
        """What crossed the wire in one handshake, played back later without the agent, does
        not attest: every handshake's challenges are fresh."""
        transcript = Transcript()
        await run_attestation(server_node_attestor, agent_node_attestor, transcript=transcript)
        if not transcript.exchanges:
            pytest.skip("this attestor sends no challenge")
        recorded = [answer for _, answer in transcript.exchanges]

        async def replay(challenge: bytes) -> bytes:
            return recorded.pop(0) if recorded else b""

        with attesting_peer(LOOPBACK_PEER), pytest.raises(REFUSALS) as refused:
            await server_node_attestor.attest(transcript.payload, replay)
        assert str(refused.value), "the refusal gives no reason"

    @pytest.mark.asyncio
    async def test_a_reattestable_node_attests_again_as_itself(
        self,
        server_node_attestor: ServerNodeAttestor,
        agent_node_attestor: AgentNodeAttestor,
    ) -> None:
        """A result that says the node may attest again must hold: the same agent, attesting
        again, gets the same ID and selectors."""
        first = await run_attestation(server_node_attestor, agent_node_attestor)
        if not first.can_reattest:
            pytest.skip("this attestor's nodes do not attest again")
        second = await run_attestation(server_node_attestor, agent_node_attestor)
        assert second.agent_id == first.agent_id
        assert set(second.selector_values) == set(first.selector_values)
        assert second.can_reattest

    @pytest.mark.asyncio
    async def test_agent_payload_is_bytes(self, agent_node_attestor: AgentNodeAttestor) -> None:
        async with agent_attestation(agent_node_attestor):
            payload = await agent_node_attestor.attestation_payload()
        assert isinstance(payload, bytes)
        assert payload, "the attestation payload is empty"
