"""The Agent service, called directly with the caller set as the gate would set it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import structlog.testing
from betterproto.lib.google.protobuf import Empty

from pyspire.proto.gen.codec import spire_api_server_agent_v1 as agent_wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.messages import EncodedMessage
from pyspire.server.api.agent import AgentService
from pyspire.server.api.gate import serial_hex
from pyspire.server.api.ratelimit import ResourceExhaustedError
from pyspire.server.authorization import CallerKind
from pyspire.server.context import ServerContext
from pyspire_sdk.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from pyspire_sdk.plugins.datastore import EntryFilter
from pyspire_sdk.plugins.node_attestor import AttestationPeer
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

from .conftest import (
    ChallengeAttestor,
    Requests,
    as_agent,
    attest,
    attest_stream,
    caller,
    corrupt_signature,
    leaf,
    make_csr,
    params,
    verify_chain,
)

JOIN_AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/tok-1")
CHALLENGE_AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/challenge/node-1")


def agent_ref(spiffe_id: SpiffeId) -> pb.Spiffeid:
    return pb.Spiffeid(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


async def new_token(service: AgentService, value: str = "tok-1", ttl: int = 600) -> pb.JoinToken:
    caller(CallerKind.LOCAL)
    return await service.create_join_token(agent_pb.CreateJoinTokenRequest(ttl=ttl, token=value))


async def join(
    service: AgentService, value: str = "tok-1", csr: bytes | None = None
) -> agent_pb.AttestAgentResponseResult:
    caller(CallerKind.ANY, address="10.0.0.1")
    responses = await attest(
        service, params("join_token", value.encode(), make_csr() if csr is None else csr)
    )
    assert len(responses) == 1
    return responses[0].result


async def roots(context: ServerContext) -> list[bytes]:
    bundle = await context.datastore.get_bundle(context.trust_domain)
    assert bundle is not None
    return [authority.der for authority in bundle.x509_authorities]


# -- AttestAgent ------------------------------------------------------------------------------


async def test_join_token_attestation_issues_an_agent_svid(
    context: ServerContext, agent_service: AgentService
) -> None:
    await new_token(agent_service)
    result = await join(agent_service)

    assert result.reattestable is False
    assert result.svid.id == agent_ref(JOIN_AGENT)
    verify_chain(result.svid.cert_chain, await roots(context))
    certificate = leaf(result.svid.cert_chain)
    assert result.svid.expires_at == int(certificate.not_valid_after_utc.timestamp())
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.attestation_type == "join_token"
    assert node.x509_svid_serial_number == serial_hex(certificate)
    assert node.x509_svid_expires_at == certificate.not_valid_after_utc
    assert node.can_reattest is False
    assert node.selectors == ()
    assert await context.registry.attested_node(JOIN_AGENT) == node


async def test_a_replayed_join_token_is_refused(
    context: ServerContext, agent_service: AgentService
) -> None:
    await new_token(agent_service)
    await join(agent_service)
    with pytest.raises(PermissionDeniedError, match=r"does not exist or has already been used"):
        await join(agent_service)


async def test_an_expired_join_token_is_refused(
    context: ServerContext, agent_service: AgentService, fake_clock: FakeClock
) -> None:
    await new_token(agent_service, ttl=60)
    await fake_clock.advance(61)
    with pytest.raises(PermissionDeniedError, match=r"join token expired"):
        await join(agent_service)
    assert await context.datastore.get_attested_node(JOIN_AGENT) is None


async def test_a_refused_attestation_is_logged_with_its_reason(
    context: ServerContext, agent_service: AgentService
) -> None:
    with structlog.testing.capture_logs() as logs, pytest.raises(PermissionDeniedError):
        await join(agent_service, "never-created")
    [refusal] = [line for line in logs if line["event"] == "agent attestation refused"]
    assert refusal["log_level"] == "warning"
    assert refusal["attestation_type"] == "join_token"
    assert refusal["address"] == "10.0.0.1"
    assert "does not exist or has already been used" in refusal["reason"]
    assert "never-created" not in str(refusal)


async def test_a_node_of_a_non_reattestable_attestor_cannot_attest_again(
    context: ServerContext, agent_service: AgentService
) -> None:
    await new_token(agent_service)
    first = await join(agent_service)
    await new_token(agent_service)  # the same value again: the same agent ID
    with pytest.raises(PermissionDeniedError, match=r"^attestation data has already been used"):
        await join(agent_service)
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.x509_svid_serial_number == serial_hex(leaf(first.svid.cert_chain))


async def test_an_unknown_attestation_type_is_named(agent_service: AgentService) -> None:
    caller(CallerKind.ANY)
    with pytest.raises(InvalidArgumentError, match=r"no node attestor named 'tpm' is configured"):
        await attest(agent_service, params("tpm", b"x", make_csr()))


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        (b"", r"^missing CSR$"),
        (b"not a csr", "^malformed CSR"),
        (corrupt_signature(make_csr()), "^invalid CSR signature$"),
    ],
)
async def test_a_bad_csr_is_refused_before_the_token_is_used(
    context: ServerContext, agent_service: AgentService, csr: bytes, message: str
) -> None:
    await new_token(agent_service)
    with pytest.raises(InvalidArgumentError, match=message):
        await join(agent_service, csr=csr)
    assert await context.datastore.fetch_join_token("tok-1") is not None
    assert await context.datastore.get_attested_node(JOIN_AGENT) is None


def test_attest_agent_is_served_with_the_codec(context: ServerContext) -> None:
    mapping = AgentService(context).__mapping__()
    handler = mapping["/spire.api.server.agent.v1.Agent/AttestAgent"]
    assert handler.request_type is agent_wire.AttestAgentRequest
    assert handler.reply_type is EncodedMessage
    assert len(mapping) == len(agent_pb.AgentBase().__mapping__())


async def test_malformed_first_requests_are_refused(agent_service: AgentService) -> None:
    caller(CallerKind.ANY)
    with pytest.raises(InvalidArgumentError, match=r"^missing params"):
        await attest(agent_service)
    with pytest.raises(InvalidArgumentError, match=r"^missing params"):
        await attest(agent_service, agent_pb.AttestAgentRequest(challenge_response=b"x"))
    with pytest.raises(InvalidArgumentError, match=r"^missing params\.data\.type"):
        await attest(agent_service, params("", b"x", make_csr()))
    with pytest.raises(InvalidArgumentError, match=r"^missing params\.data\.payload"):
        await attest(agent_service, params("join_token", b"", make_csr()))


async def test_challenge_response_attestation(
    context: ServerContext, agent_service: AgentService, challenge_attestor: ChallengeAttestor
) -> None:
    caller(CallerKind.ANY)
    requests = Requests()
    responses = attest_stream(agent_service, requests)
    requests.put(params("challenge", b"node-1", make_csr()))
    first = await anext(responses)
    assert first.challenge == b"reverse:node-1"
    requests.put(agent_pb.AttestAgentRequest(challenge_response=b"1-edon"))
    second = await anext(responses)
    assert second.result.reattestable is True
    assert second.result.svid.id == agent_ref(CHALLENGE_AGENT)
    with pytest.raises(StopAsyncIteration):
        await anext(responses)

    node = await context.datastore.get_attested_node(CHALLENGE_AGENT)
    assert node is not None
    assert node.selectors == (Selector("challenge", "region:eu"),)
    assert node.can_reattest is True
    assert await context.datastore.get_node_selectors(CHALLENGE_AGENT) == node.selectors


async def test_the_attestor_sees_the_address_the_agent_connects_from(
    agent_service: AgentService, challenge_attestor: ChallengeAttestor
) -> None:
    for address in ("192.0.2.9", ""):
        caller(CallerKind.ANY, address=address)
        await attest(
            agent_service,
            params("challenge", b"node-1", make_csr()),
            agent_pb.AttestAgentRequest(challenge_response=b"1-edon"),
        )
    assert challenge_attestor.peers == [
        AttestationPeer(address="192.0.2.9"),
        AttestationPeer(address=None),
    ]


async def test_a_reattestable_agent_attests_again_with_a_new_svid(
    context: ServerContext, agent_service: AgentService
) -> None:
    async def once() -> str:
        caller(CallerKind.ANY)
        requests = Requests()
        responses = attest_stream(agent_service, requests)
        requests.put(params("challenge", b"node-1", make_csr()))
        await anext(responses)
        requests.put(agent_pb.AttestAgentRequest(challenge_response=b"1-edon"))
        return serial_hex(leaf((await anext(responses)).result.svid.cert_chain))

    first = await once()
    second = await once()
    assert first != second
    node = await context.datastore.get_attested_node(CHALLENGE_AGENT)
    assert node is not None
    assert node.x509_svid_serial_number == second


async def test_a_wrong_challenge_answer_is_refused(
    context: ServerContext, agent_service: AgentService
) -> None:
    caller(CallerKind.ANY)
    with pytest.raises(PermissionDeniedError, match=r"challenge answer is wrong"):
        await attest(
            agent_service,
            params("challenge", b"node-1", make_csr()),
            agent_pb.AttestAgentRequest(challenge_response=b"nope"),
        )
    assert await context.datastore.get_attested_node(CHALLENGE_AGENT) is None


async def test_an_agent_that_leaves_mid_challenge(agent_service: AgentService) -> None:
    caller(CallerKind.ANY)
    with pytest.raises(UnavailableError, match=r"closed the stream before answering"):
        await attest(agent_service, params("challenge", b"node-1", make_csr()))
    with pytest.raises(InvalidArgumentError, match=r"expected challenge_response"):
        await attest(
            agent_service,
            params("challenge", b"node-1", make_csr()),
            params("challenge", b"node-1", make_csr()),
        )


async def test_the_attestor_ends_with_a_stream_closed_mid_challenge(
    agent_service: AgentService, challenge_attestor: ChallengeAttestor
) -> None:
    caller(CallerKind.ANY)
    requests = Requests()
    responses = attest_stream(agent_service, requests)
    requests.put(params("challenge", b"node-1", make_csr()))
    assert (await anext(responses)).challenge == b"reverse:node-1"
    await responses.aclose()  # the agent hung up: the stream is closed at its yield
    assert challenge_attestor.cancelled == 1, "the attestor was cancelled and awaited"


async def test_a_banned_agent_cannot_attest_again(
    context: ServerContext, agent_service: AgentService
) -> None:
    caller(CallerKind.ANY)
    await attest(
        agent_service,
        params("challenge", b"node-1", make_csr()),
        agent_pb.AttestAgentRequest(challenge_response=b"1-edon"),
    )
    caller(CallerKind.LOCAL)
    await agent_service.ban_agent(agent_pb.BanAgentRequest(id=agent_ref(CHALLENGE_AGENT)))
    caller(CallerKind.ANY)
    with pytest.raises(PermissionDeniedError, match=r"^failed to attest: agent is banned$"):
        await attest(
            agent_service,
            params("challenge", b"node-1", make_csr()),
            agent_pb.AttestAgentRequest(challenge_response=b"1-edon"),
        )


async def test_attestation_is_rate_limited_per_address(
    context: ServerContext, fake_clock: FakeClock
) -> None:
    service = AgentService(context)
    caller(CallerKind.ANY, address="10.0.0.7")
    with pytest.raises(InvalidArgumentError):
        await attest(service, params("tpm", b"x", make_csr()))
    with pytest.raises(ResourceExhaustedError, match=r"10.0.0.7"):
        await attest(service, params("tpm", b"x", make_csr()))
    caller(CallerKind.ANY, address="10.0.0.8")
    with pytest.raises(InvalidArgumentError):
        await attest(service, params("tpm", b"x", make_csr()))
    await fake_clock.advance(1)
    caller(CallerKind.ANY, address="10.0.0.7")
    with pytest.raises(InvalidArgumentError):
        await attest(service, params("tpm", b"x", make_csr()))


# -- RenewAgent and PostStatus ----------------------------------------------------------------


async def test_renew_then_the_new_svid_becomes_current_on_first_use(
    context: ServerContext, agent_service: AgentService
) -> None:
    await new_token(agent_service)
    first = await join(agent_service)
    await as_agent(context, first.svid.cert_chain[0])
    renewed = await agent_service.renew_agent(
        agent_pb.RenewAgentRequest(params=agent_pb.AgentX509SvidParams(csr=make_csr()))
    )
    verify_chain(renewed.svid.cert_chain, await roots(context))
    new_serial = serial_hex(leaf(renewed.svid.cert_chain))
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.x509_svid_serial_number == serial_hex(leaf(first.svid.cert_chain))
    assert node.new_x509_svid_serial_number == new_serial

    # The old SVID still works until the new one is used ...
    await as_agent(context, first.svid.cert_chain[0])
    # ... and the first call with the new one makes it current.
    who = await as_agent(context, renewed.svid.cert_chain[0])
    assert who.node is not None
    assert who.node.x509_svid_serial_number == new_serial
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.x509_svid_serial_number == new_serial
    assert node.new_x509_svid_serial_number == ""
    with pytest.raises(PermissionDeniedError, match=r"SVID is not active"):
        await as_agent(context, first.svid.cert_chain[0])


async def test_renew_refuses_reattestable_agents_and_bad_csrs(
    context: ServerContext, agent_service: AgentService
) -> None:
    caller(CallerKind.ANY)
    responses = await attest(
        agent_service,
        params("challenge", b"node-1", make_csr()),
        agent_pb.AttestAgentRequest(challenge_response=b"1-edon"),
    )
    await as_agent(context, responses[-1].result.svid.cert_chain[0])
    with pytest.raises(PermissionDeniedError, match=r"^agent must reattest instead of renew$"):
        await agent_service.renew_agent(
            agent_pb.RenewAgentRequest(params=agent_pb.AgentX509SvidParams(csr=make_csr()))
        )

    await new_token(agent_service)
    result = await join(agent_service)
    await as_agent(context, result.svid.cert_chain[0])
    with pytest.raises(InvalidArgumentError, match=r"^missing CSR$"):
        await agent_service.renew_agent(agent_pb.RenewAgentRequest())
    with pytest.raises(InvalidArgumentError, match=r"^malformed CSR"):
        await agent_service.renew_agent(
            agent_pb.RenewAgentRequest(params=agent_pb.AgentX509SvidParams(csr=b"junk"))
        )
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.new_x509_svid_serial_number == ""

    caller(CallerKind.ANY)
    with pytest.raises(PermissionDeniedError, match=r"^caller is not an attested agent$"):
        await agent_service.renew_agent(
            agent_pb.RenewAgentRequest(params=agent_pb.AgentX509SvidParams(csr=make_csr()))
        )


async def test_post_status_records_the_agent_version(
    context: ServerContext, agent_service: AgentService
) -> None:
    await new_token(agent_service)
    result = await join(agent_service)
    await as_agent(context, result.svid.cert_chain[0])
    await agent_service.post_status(agent_pb.PostStatusRequest(agent_version="1.2.3"))
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.agent_version == "1.2.3"
    for version, reason in (
        ("v" * 256, "is 256 bytes, longer than the 255 allowed"),
        ("1.2.3\nforged: line", "holds a control character (U+000A) at position 5"),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            await agent_service.post_status(agent_pb.PostStatusRequest(agent_version=version))
        assert str(caught.value) == f"agent_version {reason}"
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.agent_version == "1.2.3"


# -- administration ---------------------------------------------------------------------------


async def attest_many(service: AgentService) -> None:
    """Three agents: two join_token ones (one banned later by tests) and a challenge one."""
    for token in ("tok-1", "tok-2"):
        await new_token(service, token)
        await join(service, token)
    caller(CallerKind.ANY)
    await attest(
        service,
        params("challenge", b"node-1", make_csr()),
        agent_pb.AttestAgentRequest(challenge_response=b"1-edon"),
    )
    caller(CallerKind.LOCAL)


def ids(response: agent_pb.ListAgentsResponse) -> list[str]:
    return [agent.id.path for agent in response.agents]


async def test_count_and_list_agents_with_filters_paging_and_masks(
    agent_service: AgentService,
) -> None:
    await attest_many(agent_service)
    await agent_service.ban_agent(
        agent_pb.BanAgentRequest(id=agent_ref(SpiffeId.parse(str(JOIN_AGENT)[:-1] + "2")))
    )
    assert (await agent_service.count_agents(agent_pb.CountAgentsRequest())).count == 3

    everything = await agent_service.list_agents(agent_pb.ListAgentsRequest())
    assert sorted(ids(everything)) == [
        "/spire/agent/challenge/node-1",
        "/spire/agent/join_token/tok-1",
        "/spire/agent/join_token/tok-2",
    ]
    assert all(agent.attestation_type for agent in everything.agents)

    by_type = await agent_service.list_agents(
        agent_pb.ListAgentsRequest(
            filter=agent_pb.ListAgentsRequestFilter(by_attestation_type="join_token")
        )
    )
    assert sorted(ids(by_type)) == [
        "/spire/agent/join_token/tok-1",
        "/spire/agent/join_token/tok-2",
    ]
    banned = await agent_service.list_agents(
        agent_pb.ListAgentsRequest(filter=agent_pb.ListAgentsRequestFilter(by_banned=True))
    )
    assert ids(banned) == ["/spire/agent/join_token/tok-2"]
    not_banned = await agent_service.list_agents(
        agent_pb.ListAgentsRequest(filter=agent_pb.ListAgentsRequestFilter(by_banned=False))
    )
    assert len(not_banned.agents) == 2
    reattestable = await agent_service.list_agents(
        agent_pb.ListAgentsRequest(filter=agent_pb.ListAgentsRequestFilter(by_can_reattest=True))
    )
    assert ids(reattestable) == ["/spire/agent/challenge/node-1"]
    by_selector = await agent_service.list_agents(
        agent_pb.ListAgentsRequest(
            filter=agent_pb.ListAgentsRequestFilter(
                by_selector_match=pb.SelectorMatch(
                    selectors=[pb.Selector(type="challenge", value="region:eu")],
                    match=pb.SelectorMatchMatchBehavior(pb.SelectorMatchMatchBehavior.MATCH_EXACT),
                )
            )
        )
    )
    assert ids(by_selector) == ["/spire/agent/challenge/node-1"]

    seen: list[str] = []
    token = ""
    while True:
        page = await agent_service.list_agents(
            agent_pb.ListAgentsRequest(page_size=2, page_token=token)
        )
        assert len(page.agents) <= 2
        seen += ids(page)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids(everything))

    masked = await agent_service.list_agents(
        agent_pb.ListAgentsRequest(output_mask=pb.AgentMask(banned=True))
    )
    for agent in masked.agents:
        assert agent.id.path
        assert agent.attestation_type == ""
        assert agent.x509_svid_serial_number == ""
        assert agent.selectors == []
    assert [a.banned for a in masked.agents].count(True) == 1


async def test_list_agents_rejects_bad_input(agent_service: AgentService) -> None:
    caller(CallerKind.LOCAL)
    with pytest.raises(InvalidArgumentError, match=r"^invalid page_size: -1 is negative$"):
        await agent_service.list_agents(agent_pb.ListAgentsRequest(page_size=-1))
    with pytest.raises(InvalidArgumentError):
        await agent_service.list_agents(
            agent_pb.ListAgentsRequest(page_size=1, page_token="not-a-token")
        )
    with pytest.raises(InvalidArgumentError, match=r"by_selector_match"):
        await agent_service.list_agents(
            agent_pb.ListAgentsRequest(
                filter=agent_pb.ListAgentsRequestFilter(
                    by_selector_match=pb.SelectorMatch(
                        match=pb.SelectorMatchMatchBehavior(
                            pb.SelectorMatchMatchBehavior.MATCH_SUBSET
                        )
                    )
                )
            )
        )
    with pytest.raises(InvalidArgumentError, match=r"selectors\[0\]"):
        await agent_service.list_agents(
            agent_pb.ListAgentsRequest(
                filter=agent_pb.ListAgentsRequestFilter(
                    by_selector_match=pb.SelectorMatch(selectors=[pb.Selector(type="a")])
                )
            )
        )


async def test_get_agent(agent_service: AgentService) -> None:
    await new_token(agent_service)
    await join(agent_service)
    caller(CallerKind.LOCAL)
    agent = await agent_service.get_agent(agent_pb.GetAgentRequest(id=agent_ref(JOIN_AGENT)))
    assert agent.attestation_type == "join_token"
    assert agent.x509_svid_serial_number
    masked = await agent_service.get_agent(
        agent_pb.GetAgentRequest(
            id=agent_ref(JOIN_AGENT), output_mask=pb.AgentMask(attestation_type=True)
        )
    )
    assert masked.attestation_type == "join_token"
    assert masked.x509_svid_serial_number == ""
    assert masked.x509_svid_expires_at == 0

    with pytest.raises(NotFoundError, match=r"not found"):
        await agent_service.get_agent(
            agent_pb.GetAgentRequest(
                id=pb.Spiffeid(trust_domain="example.org", path="/spire/agent/x/y")
            )
        )
    with pytest.raises(InvalidArgumentError, match=r"^invalid id: .* is not an agent ID"):
        await agent_service.get_agent(
            agent_pb.GetAgentRequest(id=pb.Spiffeid(trust_domain="example.org", path="/workload"))
        )
    with pytest.raises(InvalidArgumentError, match=r"^invalid id: .* is not an agent ID"):
        await agent_service.get_agent(
            agent_pb.GetAgentRequest(
                id=pb.Spiffeid(trust_domain="other.org", path="/spire/agent/join_token/tok-1")
            )
        )
    with pytest.raises(InvalidArgumentError, match=r"^invalid id: trust domain is missing"):
        await agent_service.get_agent(agent_pb.GetAgentRequest())
    with pytest.raises(InvalidArgumentError, match=r"^invalid id"):
        await agent_service.get_agent(
            agent_pb.GetAgentRequest(id=pb.Spiffeid(trust_domain="Bad TD", path="/spire/agent/a"))
        )


async def test_delete_agent_evicts_it(context: ServerContext, agent_service: AgentService) -> None:
    await new_token(agent_service)
    result = await join(agent_service)
    await as_agent(context, result.svid.cert_chain[0])
    caller(CallerKind.LOCAL)
    assert isinstance(
        await agent_service.delete_agent(agent_pb.DeleteAgentRequest(id=agent_ref(JOIN_AGENT))),
        Empty,
    )
    assert await context.datastore.get_attested_node(JOIN_AGENT) is None
    with pytest.raises(PermissionDeniedError, match=r"is not attested$"):
        await as_agent(context, result.svid.cert_chain[0])
    with pytest.raises(NotFoundError, match=r"not found"):
        await agent_service.delete_agent(agent_pb.DeleteAgentRequest(id=agent_ref(JOIN_AGENT)))


async def test_ban_agent(context: ServerContext, agent_service: AgentService) -> None:
    await new_token(agent_service)
    result = await join(agent_service)
    caller(CallerKind.LOCAL)
    await agent_service.ban_agent(agent_pb.BanAgentRequest(id=agent_ref(JOIN_AGENT)))
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.banned is True
    assert node.x509_svid_serial_number == ""
    assert node.attestation_type == "join_token"
    with pytest.raises(PermissionDeniedError, match=r"is banned$"):
        await as_agent(context, result.svid.cert_chain[0])
    with pytest.raises(NotFoundError, match=r"not found"):
        await agent_service.ban_agent(
            agent_pb.BanAgentRequest(
                id=pb.Spiffeid(trust_domain="example.org", path="/spire/agent/x/none")
            )
        )


# -- CreateJoinToken --------------------------------------------------------------------------


async def test_create_join_token_generates_a_uuid_and_an_expiry(
    context: ServerContext, agent_service: AgentService, fake_clock: FakeClock
) -> None:
    caller(CallerKind.LOCAL)
    token = await agent_service.create_join_token(agent_pb.CreateJoinTokenRequest(ttl=600))
    assert len(token.value) == 36 and token.value.count("-") == 4
    expected = fake_clock.now() + timedelta(seconds=600)
    assert token.expires_at == int(expected.timestamp())
    stored = await context.datastore.fetch_join_token(token.value)
    assert stored is not None
    assert stored.expires_at == expected.replace(microsecond=0)
    other = await agent_service.create_join_token(agent_pb.CreateJoinTokenRequest(ttl=600))
    assert other.value != token.value


async def test_create_join_token_with_an_agent_id_adds_the_alias_entry(
    context: ServerContext, agent_service: AgentService
) -> None:
    caller(CallerKind.LOCAL)
    await agent_service.create_join_token(
        agent_pb.CreateJoinTokenRequest(
            ttl=60, token="tok-9", agent_id=pb.Spiffeid(trust_domain="example.org", path="/node/a")
        )
    )
    parent = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/tok-9")
    page = await context.datastore.list_entries(EntryFilter(by_parent_id=parent))
    assert len(page.entries) == 1
    entry = page.entries[0]
    assert entry.spiffe_id == SpiffeId.parse("spiffe://example.org/node/a")
    assert entry.selectors == (Selector("spiffe_id", str(parent)),)


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (agent_pb.CreateJoinTokenRequest(), InvalidArgumentError, "^invalid ttl"),
        (agent_pb.CreateJoinTokenRequest(ttl=-5), InvalidArgumentError, "^invalid ttl"),
        (
            agent_pb.CreateJoinTokenRequest(ttl=5, token="no/slashes"),
            InvalidArgumentError,
            "^invalid token",
        ),
        (
            agent_pb.CreateJoinTokenRequest(
                ttl=5, token="t", agent_id=pb.Spiffeid(trust_domain="other.org", path="/a")
            ),
            InvalidArgumentError,
            "^invalid agent_id: .* is not in trust domain",
        ),
        (
            agent_pb.CreateJoinTokenRequest(
                ttl=5, token="t", agent_id=pb.Spiffeid(trust_domain="example.org", path="")
            ),
            InvalidArgumentError,
            "^invalid agent_id: .* has no path",
        ),
        (
            agent_pb.CreateJoinTokenRequest(
                ttl=5, token="t", agent_id=pb.Spiffeid(trust_domain="example.org", path="no-slash")
            ),
            InvalidArgumentError,
            "^invalid agent_id",
        ),
        (
            agent_pb.CreateJoinTokenRequest(
                ttl=5,
                token="t",
                agent_id=pb.Spiffeid(trust_domain="example.org", path="/spire/server"),
            ),
            InvalidArgumentError,
            "^invalid agent_id: .* is in the namespace reserved for the server and agents",
        ),
        (
            agent_pb.CreateJoinTokenRequest(
                ttl=5,
                token="t",
                agent_id=pb.Spiffeid(trust_domain="example.org", path="/spire/agent/x/y"),
            ),
            InvalidArgumentError,
            "^invalid agent_id: .* is in the namespace reserved",
        ),
        (
            agent_pb.CreateJoinTokenRequest(ttl=5, token="t\nforged"),
            InvalidArgumentError,
            "^invalid token",
        ),
        (
            agent_pb.CreateJoinTokenRequest(ttl=5, token=".."),
            InvalidArgumentError,
            "^invalid token",
        ),
    ],
)
async def test_create_join_token_rejects_bad_input(
    context: ServerContext,
    agent_service: AgentService,
    request_: agent_pb.CreateJoinTokenRequest,
    error: type[Exception],
    message: str,
) -> None:
    caller(CallerKind.LOCAL)
    with pytest.raises(error, match=message):
        await agent_service.create_join_token(request_)
    assert await context.datastore.fetch_join_token("t") is None


async def test_create_join_token_refuses_a_duplicate(agent_service: AgentService) -> None:
    await new_token(agent_service, "dup")
    with pytest.raises(AlreadyExistsError):
        await new_token(agent_service, "dup")


async def test_a_failed_alias_entry_leaves_no_token(
    context: ServerContext, agent_service: AgentService
) -> None:
    request = agent_pb.CreateJoinTokenRequest(
        ttl=60, token="tok-a", agent_id=pb.Spiffeid(trust_domain="example.org", path="/node/a")
    )
    caller(CallerKind.LOCAL)
    await agent_service.create_join_token(request)
    await context.datastore.delete_join_token("tok-a")
    # The alias entry exists already: creating it again fails, and the new token goes too.
    with pytest.raises(AlreadyExistsError):
        await agent_service.create_join_token(request)
    assert await context.datastore.fetch_join_token("tok-a") is None


async def test_concurrent_attestations_with_one_token_admit_one_agent(
    context: ServerContext, agent_service: AgentService
) -> None:
    await new_token(agent_service)
    caller(CallerKind.ANY)
    outcomes = await asyncio.gather(
        *(attest(agent_service, params("join_token", b"tok-1", make_csr())) for _ in range(4)),
        return_exceptions=True,
    )
    admitted = [o for o in outcomes if isinstance(o, list)]
    assert len(admitted) == 1
    assert all(isinstance(o, PermissionDeniedError) for o in outcomes if o not in admitted)
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.x509_svid_serial_number == serial_hex(leaf(admitted[0][0].result.svid.cert_chain))


async def test_selectors_left_by_an_unfinished_attestation_are_cleared(
    context: ServerContext, agent_service: AgentService
) -> None:
    await context.datastore.set_node_selectors(JOIN_AGENT, (Selector("left", "over"),))
    await new_token(agent_service)
    await join(agent_service)
    node = await context.datastore.get_attested_node(JOIN_AGENT)
    assert node is not None
    assert node.selectors == ()
    assert context.registry.remembered_node(JOIN_AGENT) == node
