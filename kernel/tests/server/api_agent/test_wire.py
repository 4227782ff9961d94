"""The services through real grpclib servers: TLS on TCP for agents, a unix socket for admins.

An agent attests anonymously, then renews and signs with its SVID over mutual TLS; the gate
refuses it once it is banned or evicted, and once its SVID expires by the server's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import grpclib.const
import grpclib.server
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.server.api.agent import AgentService
from pyspire.server.api.bundle import BundleService
from pyspire.server.api.gate import local_gate, tcp_gate
from pyspire.server.api.svid import SvidService
from pyspire.server.context import ServerContext
from pyspire.transport.calls import WithCallContext
from pyspire.transport.tls import RotatingServerContext, build_client_context
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

from .conftest import leaf, make_csr, make_key, params, verify_chain

Status = grpclib.const.Status


@pytest.fixture
def fake_clock() -> FakeClock:
    """TLS checks certificate validity against the real time: start the fake clock now."""
    return FakeClock(datetime.now(UTC))


@dataclass
class Servers:
    context: ServerContext
    port: int
    admin_path: str
    roots: list[bytes]

    def anonymous(self) -> Channel:
        return Channel("127.0.0.1", self.port, ssl=build_client_context(self.roots))

    def agent(self, chain: list[bytes], key: ec.EllipticCurvePrivateKey) -> Channel:
        return Channel("127.0.0.1", self.port, ssl=build_client_context(self.roots, chain, key))

    def admin(self) -> Channel:
        return Channel(path=self.admin_path)


@pytest.fixture
async def servers(context: ServerContext, tmp_path: Path) -> AsyncIterator[Servers]:
    bundle = await context.datastore.get_bundle(context.trust_domain)
    assert bundle is not None
    roots = [authority.der for authority in bundle.x509_authorities]
    server_key = make_key()
    server_svid = await context.issuer.x509(context.server_id, server_key.public_key())
    tls = RotatingServerContext()
    await tls.update(server_svid.cert_chain, server_key, roots)

    services = [AgentService(context), SvidService(context), BundleService(context)]
    gate = tcp_gate(context)
    admin_gate = local_gate(context)
    tcp = grpclib.server.Server([WithCallContext(service, gate) for service in services])
    admin = grpclib.server.Server([WithCallContext(s, admin_gate) for s in services])
    await tcp.start("127.0.0.1", 0, ssl=tls.listening)
    admin_path = str(tmp_path / "admin.sock")
    await admin.start(path=admin_path)
    listening = cast(asyncio.Server, tcp._server)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield Servers(context, port, admin_path, roots)
    finally:
        for server in (tcp, admin):
            server.close()
            await server.wait_closed()


async def create_token(servers: Servers, token: str) -> None:
    channel = servers.admin()
    try:
        await agent_pb.AgentStub(channel).create_join_token(
            agent_pb.CreateJoinTokenRequest(ttl=600, token=token)
        )
    finally:
        channel.close()


async def attest_join_token(
    servers: Servers, token: str
) -> tuple[list[bytes], ec.EllipticCurvePrivateKey]:
    key = make_key()
    channel = servers.anonymous()
    try:
        responses = [
            response
            async for response in agent_pb.AgentStub(channel).attest_agent(
                [params("join_token", token.encode(), make_csr(key))]
            )
        ]
    finally:
        channel.close()
    assert len(responses) == 1
    return list(responses[0].result.svid.cert_chain), key


async def test_attest_renew_sign_then_ban(servers: Servers, fake_clock: FakeClock) -> None:
    context = servers.context
    await create_token(servers, "wire-1")
    chain, key = await attest_join_token(servers, "wire-1")
    verify_chain(chain, servers.roots)
    agent_id = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/wire-1")
    created = await context.datastore.create_entry(
        RegistrationEntry(
            spiffe_id=SpiffeId.parse("spiffe://example.org/workload"),
            parent_id=agent_id,
            selectors=(Selector("unix", "uid:1000"),),
        )
    )
    await context.registry.refresh()

    channel = servers.agent(chain, key)
    try:
        new_key = make_key()
        renewed = await agent_pb.AgentStub(channel).renew_agent(
            agent_pb.RenewAgentRequest(params=agent_pb.AgentX509SvidParams(csr=make_csr(new_key)))
        )
        signed = await svid_pb.SvidStub(channel).batch_new_x509_svid(
            svid_pb.BatchNewX509SvidRequest(
                params=[svid_pb.NewX509SvidParams(entry_id=created.id, csr=make_csr())]
            )
        )
        assert signed.results[0].status.code == 0
        verify_chain(list(signed.results[0].svid.cert_chain), servers.roots)
        bundle = await bundle_pb.BundleStub(channel).get_bundle(bundle_pb.GetBundleRequest())
        assert [a.asn1 for a in bundle.x509_authorities] == servers.roots
    finally:
        channel.close()

    renewed_chain = list(renewed.svid.cert_chain)
    verify_chain(renewed_chain, servers.roots)
    channel = servers.agent(renewed_chain, new_key)
    try:
        await agent_pb.AgentStub(channel).post_status(
            agent_pb.PostStatusRequest(agent_version="0.1.0")
        )
    finally:
        channel.close()
    node = await context.datastore.get_attested_node(agent_id)
    assert node is not None
    assert node.agent_version == "0.1.0"
    assert node.x509_svid_serial_number == format(leaf(renewed_chain).serial_number, "x")

    # The superseded SVID is refused now.
    channel = servers.agent(chain, key)
    try:
        with pytest.raises(GRPCError) as caught:
            await agent_pb.AgentStub(channel).post_status(agent_pb.PostStatusRequest())
    finally:
        channel.close()
    assert caught.value.status == Status.PERMISSION_DENIED
    assert "SVID is not active" in (caught.value.message or "")

    admin = servers.admin()
    try:
        await agent_pb.AgentStub(admin).ban_agent(
            agent_pb.BanAgentRequest(id=pb.Spiffeid(trust_domain="example.org", path=agent_id.path))
        )
    finally:
        admin.close()
    channel = servers.agent(renewed_chain, new_key)
    try:
        with pytest.raises(GRPCError) as caught:
            await svid_pb.SvidStub(channel).batch_new_x509_svid(
                svid_pb.BatchNewX509SvidRequest(
                    params=[svid_pb.NewX509SvidParams(entry_id=created.id, csr=make_csr())]
                )
            )
    finally:
        channel.close()
    assert caught.value.status == Status.PERMISSION_DENIED
    assert (caught.value.message or "").endswith("is banned")


async def test_evicted_and_expired_agents_are_refused(
    servers: Servers, fake_clock: FakeClock
) -> None:
    await create_token(servers, "wire-2")
    chain, key = await attest_join_token(servers, "wire-2")
    await fake_clock.advance(1)  # the attestation rate limit: one per second per address
    await create_token(servers, "wire-3")
    other_chain, other_key = await attest_join_token(servers, "wire-3")

    admin = servers.admin()
    try:
        await agent_pb.AgentStub(admin).delete_agent(
            agent_pb.DeleteAgentRequest(
                id=pb.Spiffeid(trust_domain="example.org", path="/spire/agent/join_token/wire-2")
            )
        )
    finally:
        admin.close()

    channel = servers.agent(chain, key)
    try:
        with pytest.raises(GRPCError) as caught:
            await agent_pb.AgentStub(channel).post_status(agent_pb.PostStatusRequest())
    finally:
        channel.close()
    assert caught.value.status == Status.PERMISSION_DENIED
    assert (caught.value.message or "").endswith("is not attested")

    await fake_clock.advance(servers.context.issuer.policy.agent_ttl)
    channel = servers.agent(other_chain, other_key)
    try:
        with pytest.raises(GRPCError) as caught:
            await agent_pb.AgentStub(channel).post_status(agent_pb.PostStatusRequest())
    finally:
        channel.close()
    assert caught.value.status == Status.PERMISSION_DENIED
    assert (caught.value.message or "").endswith("SVID is expired")


async def test_refusals_over_the_wire(servers: Servers) -> None:
    channel = servers.anonymous()
    try:
        with pytest.raises(GRPCError) as caught:
            await agent_pb.AgentStub(channel).create_join_token(
                agent_pb.CreateJoinTokenRequest(ttl=60)
            )
        assert caught.value.status == Status.PERMISSION_DENIED
        assert caught.value.message == (
            "caller is not authorized to call /spire.api.server.agent.v1.Agent/CreateJoinToken"
        )

        with pytest.raises(GRPCError) as caught:
            async for _ in agent_pb.AgentStub(channel).attest_agent(
                [params("nope", b"x", make_csr())]
            ):
                pass
        assert caught.value.status == Status.INVALID_ARGUMENT
        assert "'nope'" in (caught.value.message or "")

        with pytest.raises(GRPCError) as caught:
            async for _ in agent_pb.AgentStub(channel).attest_agent(
                [params("nope", b"x", make_csr())]
            ):
                pass
        assert caught.value.status == Status.RESOURCE_EXHAUSTED
    finally:
        channel.close()

    admin = servers.admin()
    try:
        with pytest.raises(GRPCError) as caught:
            await agent_pb.AgentStub(admin).renew_agent(agent_pb.RenewAgentRequest())
        assert caught.value.status == Status.PERMISSION_DENIED
        with pytest.raises(GRPCError) as caught:
            await agent_pb.AgentStub(admin).get_agent(agent_pb.GetAgentRequest())
        assert caught.value.status == Status.INVALID_ARGUMENT
    finally:
        admin.close()


async def test_challenge_response_attestation_over_the_wire(servers: Servers) -> None:
    requests: asyncio.Queue[agent_pb.AttestAgentRequest | None] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[agent_pb.AttestAgentRequest]:
        while (request := await requests.get()) is not None:
            yield request

    channel = servers.anonymous()
    try:
        await requests.put(params("challenge", b"wire-node", make_csr()))
        responses = agent_pb.AgentStub(channel).attest_agent(outgoing())
        challenge = await anext(responses)
        assert challenge.challenge == b"reverse:wire-node"
        await requests.put(agent_pb.AttestAgentRequest(challenge_response=b"edon-eriw"))
        await requests.put(None)  # nothing more to send: end the request stream
        result = await anext(responses)
        assert [r async for r in responses] == []
    finally:
        channel.close()
    assert result.result.reattestable is True
    verify_chain(list(result.result.svid.cert_chain), servers.roots)


async def test_an_open_connection_is_refused_once_its_agent_is_banned(servers: Servers) -> None:
    """The caller's identity is kept per connection, but a ban through this server, or one
    made elsewhere that reaches the registry, refuses the agent's open connection on its very
    next call."""
    await create_token(servers, "wire-ban")
    chain, key = await attest_join_token(servers, "wire-ban")
    agent_id = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/wire-ban")
    channel = servers.agent(chain, key)
    admin = servers.admin()
    try:
        stub = agent_pb.AgentStub(channel)
        await stub.post_status(agent_pb.PostStatusRequest())
        await stub.post_status(agent_pb.PostStatusRequest())
        await agent_pb.AgentStub(admin).ban_agent(
            agent_pb.BanAgentRequest(id=pb.Spiffeid(trust_domain="example.org", path=agent_id.path))
        )
        with pytest.raises(GRPCError) as caught:
            await stub.post_status(agent_pb.PostStatusRequest())
        assert caught.value.status == Status.PERMISSION_DENIED
        assert (caught.value.message or "").endswith("is banned")
    finally:
        channel.close()
        admin.close()


async def test_a_ban_written_by_another_server_refuses_the_open_connection(
    servers: Servers, fake_clock: FakeClock
) -> None:
    context = servers.context
    await create_token(servers, "wire-elsewhere")
    chain, key = await attest_join_token(servers, "wire-elsewhere")
    agent_id = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/wire-elsewhere")
    channel = servers.agent(chain, key)
    try:
        stub = agent_pb.AgentStub(channel)
        await stub.post_status(agent_pb.PostStatusRequest())
        node = await context.datastore.get_attested_node(agent_id)
        assert node is not None
        # Another server bans the agent: only the datastore (and its change event) knows.
        await context.datastore.update_attested_node(
            replace(node, x509_svid_serial_number="", banned=True),
            frozenset({"x509_svid_serial_number", "banned"}),
        )
        await stub.post_status(agent_pb.PostStatusRequest())  # not heard of yet
        await context.registry.refresh()
        with pytest.raises(GRPCError) as caught:
            await stub.post_status(agent_pb.PostStatusRequest())
        assert caught.value.status == Status.PERMISSION_DENIED
        assert (caught.value.message or "").endswith("is banned")
    finally:
        channel.close()


async def test_a_connection_is_identified_once_until_trust_changes(
    servers: Servers, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate is read once per connection (not once per call); a change of the CA or
    the trust bundle makes the next call work it out again; an SVID that expires while its
    connection is open is refused."""
    from pyspire.server.api import gate as gate_module

    parsed: list[bytes] = []
    real = gate_module.spiffe_id_of

    def counting(der: bytes) -> SpiffeId:
        parsed.append(der)
        return real(der)

    monkeypatch.setattr(gate_module, "spiffe_id_of", counting)
    await create_token(servers, "wire-once")
    chain, key = await attest_join_token(servers, "wire-once")
    parsed.clear()
    channel = servers.agent(chain, key)
    try:
        stub = agent_pb.AgentStub(channel)
        for _ in range(3):
            await stub.post_status(agent_pb.PostStatusRequest())
        assert len(parsed) == 1
        servers.context.trust_changed()
        await stub.post_status(agent_pb.PostStatusRequest())
        assert len(parsed) == 2
        await fake_clock.advance(servers.context.issuer.policy.agent_ttl)
        with pytest.raises(GRPCError) as caught:
            await stub.post_status(agent_pb.PostStatusRequest())
        assert (caught.value.message or "").endswith("SVID is expired")
    finally:
        channel.close()
