"""Agent IDs, the host's checks on attestation results, and the node attestor hooks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from pyspire_sdk.errors import InvalidArgumentError, InvalidSelectorError
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugins import node_attestor
from pyspire_sdk.plugins.node_attestor import (
    AGENT_PATH_PREFIX,
    agent_id,
    attestation_selectors,
    check_agent_id,
    is_agent_id,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain("example.org")


def test_agent_id_joins_plugin_name_and_segments() -> None:
    assert str(agent_id(TD, "aws_iid", "123", "us-east-1", "i-0abc")) == (
        "spiffe://example.org/spire/agent/aws_iid/123/us-east-1/i-0abc"
    )
    assert agent_id("example.org", "join_token", "tok") == SpiffeId.parse(
        "spiffe://example.org/spire/agent/join_token/tok"
    )


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ((), "needs at least one segment"),
        (("a/b",), "must not contain '/'"),
        (("",), "segment"),
        (("..",), r"'\.\.'"),
        (("caf\u00e9",), "forbidden character"),
    ],
)
def test_agent_id_rejects_bad_segments(segments: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        agent_id(TD, "x509pop", *segments)


def test_is_agent_id() -> None:
    assert is_agent_id(SpiffeId.parse("spiffe://example.org/spire/agent/x/1"), TD)
    assert not is_agent_id(SpiffeId.parse("spiffe://other.org/spire/agent/x/1"), TD)
    assert not is_agent_id(SpiffeId.parse("spiffe://example.org/spire/server"), TD)
    assert not is_agent_id(SpiffeId.parse("spiffe://example.org/spire/agent"), TD)
    assert not is_agent_id(SpiffeId.parse("spiffe://example.org/spire/agentx/1"), TD)
    assert not is_agent_id(SpiffeId.parse("spiffe://example.org/workload"), TD)
    assert AGENT_PATH_PREFIX == "/spire/agent/"


def test_check_agent_id_accepts_an_agent_of_the_trust_domain() -> None:
    spiffe_id = agent_id(TD, "hmac", "n1")
    assert check_agent_id(AttestationResult(agent_id=spiffe_id), TD) == spiffe_id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spiffe://other.org/spire/agent/hmac/n1", "not in trust domain 'example.org'"),
        ("spiffe://example.org/spire/server", "is not under '/spire/agent/'"),
        ("spiffe://example.org", "is not under '/spire/agent/'"),
    ],
)
def test_check_agent_id_refuses_other_ids(text: str, message: str) -> None:
    result = AttestationResult(agent_id=SpiffeId.parse(text))
    with pytest.raises(InvalidArgumentError, match=message):
        check_agent_id(result, TD)


def test_attestation_selectors_are_typed_by_plugin_sorted_and_unique() -> None:
    selectors = attestation_selectors(
        "aws_iid", ["region:us-east-1", "account_id:1", "account_id:1"]
    )
    assert selectors == (
        Selector("aws_iid", "account_id:1"),
        Selector("aws_iid", "region:us-east-1"),
    )
    assert attestation_selectors("join_token", []) == ()


def test_attestation_selectors_refuse_an_empty_value() -> None:
    with pytest.raises(InvalidSelectorError):
        attestation_selectors("aws_iid", [""])


def test_hookspecs_are_marked_for_pyspire() -> None:
    for hook in (
        node_attestor.pyspire_server_node_attestors,
        node_attestor.pyspire_agent_node_attestors,
    ):
        assert hasattr(hook, "pyspire_spec")
        assert hook.__doc__ and "Return" in hook.__doc__


# -- the peer and the agent's attestation scope ---------------------------------------------


async def test_current_peer_is_unknown_outside_an_attestation() -> None:
    assert node_attestor.current_peer() == node_attestor.AttestationPeer(address=None)


async def test_attesting_peer_reaches_tasks_created_inside_and_ends_with_the_block() -> None:
    import asyncio

    peer = node_attestor.AttestationPeer(address="192.0.2.7")
    with node_attestor.attesting_peer(peer):
        seen = await asyncio.ensure_future(_peer_in_a_task())
        assert node_attestor.current_peer() == peer
    assert seen == peer
    assert node_attestor.current_peer().address is None


async def _peer_in_a_task() -> node_attestor.AttestationPeer:
    return node_attestor.current_peer()


class _ScopedAgent:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def configure(self, config: object, host: object) -> None:
        return None

    async def close(self) -> None:
        return None

    async def attestation_payload(self) -> bytes:
        self.events.append("payload")
        return b"payload"

    async def answer_challenge(self, challenge: bytes) -> bytes:
        return b""

    def attestation_scope(self) -> contextlib.AbstractAsyncContextManager[None]:
        @contextlib.asynccontextmanager
        async def scope() -> AsyncIterator[None]:
            self.events.append("enter")
            try:
                yield
            finally:
                self.events.append("exit")

        return scope()


async def test_agent_attestation_enters_the_scope_of_a_scoped_attestor() -> None:
    agent = _ScopedAgent()
    assert isinstance(agent, node_attestor.ScopedAgentNodeAttestor)

    async def refused_attestation() -> None:
        async with node_attestor.agent_attestation(agent):
            await agent.attestation_payload()
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        await refused_attestation()

    assert agent.events == ["enter", "payload", "exit"]


async def test_agent_attestation_is_empty_for_an_attestor_without_a_scope() -> None:
    class Plain:
        async def configure(self, config: object, host: object) -> None:
            return None

        async def close(self) -> None:
            return None

        async def attestation_payload(self) -> bytes:
            return b"x"

        async def answer_challenge(self, challenge: bytes) -> bytes:
            return b""

    plain = Plain()
    assert not isinstance(plain, node_attestor.ScopedAgentNodeAttestor)
    async with node_attestor.agent_attestation(plain):
        assert await plain.attestation_payload() == b"x"
