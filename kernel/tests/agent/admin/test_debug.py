"""The agent's Debug API over a real admin socket: GetInfo with SPIRE's fields, from the real
cache, store cache and sync manager on the fake clock."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.admin import AdminEndpoint, AgentStatus, DebugService
from pyspire.agent.cache import WorkloadCache
from pyspire.agent.stored_svids import StoredSvidCache
from pyspire.agent.sync import SyncManager
from pyspire.proto.gen.spire.agent.debug import v1 as debug_pb
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.testing import FakeClock

from ..sync.fakes import AGENT_ID, FakeCa, FakeServerApi, entry


@dataclass
class Credentials:
    """The agent's SVID chain and bundle, as a NodeIdentity offers them."""

    chain: tuple[bytes, ...]
    bundle: Bundle


@dataclass
class Agent:
    server: FakeServerApi
    cache: WorkloadCache
    stored: StoredSvidCache
    sync: SyncManager
    credentials: Credentials
    stub: debug_pb.DebugStub


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="pyspire-adm-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def agent(fake_clock: FakeClock, socket_dir: Path) -> AsyncIterator[Agent]:
    server = FakeServerApi(fake_clock)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = server.ca.sign_leaf(AGENT_ID, key.public_key(), fake_clock.now(), timedelta(hours=1))
    credentials = Credentials((leaf.public_bytes(serialization.Encoding.DER),), server.bundle)
    cache = WorkloadCache(server, fake_clock)
    stored = StoredSvidCache(["vault"], fake_clock)
    sync = SyncManager(server, cache, fake_clock, interval=5, stored=stored)
    status = AgentStatus(credentials, cache, stored, sync, fake_clock, fake_clock.now())
    async with AdminEndpoint(socket_dir / "private" / "admin.sock", [DebugService(status)]) as ep:
        channel = Channel(path=str(ep.socket_path))
        try:
            yield Agent(server, cache, stored, sync, credentials, debug_pb.DebugStub(channel))
        finally:
            channel.close()
    await cache.close()


async def test_get_info_before_the_first_sync(agent: Agent, fake_clock: FakeClock) -> None:
    await fake_clock.advance(42.7)
    info = await agent.stub.get_info(debug_pb.GetInfoRequest())
    assert info.uptime == 42
    assert info.last_sync_success == 0
    assert info.cached_x509_svids_count == 0
    assert info.cached_jwt_svids_count == 0
    assert info.cached_svidstore_x509_svids_count == 0
    # The chain ends at the root of the bundle that signed the agent SVID, as in SPIRE.
    assert [cert.id.path for cert in info.svid_chain] == ["/spire/agent/join_token/abc", ""]
    assert [cert.id.trust_domain for cert in info.svid_chain] == ["example.org"] * 2
    root = agent.server.ca.certificate
    assert info.svid_chain[1].subject == root.subject.rfc4514_string()
    assert info.svid_chain[1].expires_at == int(root.not_valid_after_utc.timestamp())


async def test_get_info_counts_what_the_agent_holds(agent: Agent, fake_clock: FakeClock) -> None:
    agent.server.add(
        entry("web", created=1),
        entry("db", created=2),
        entry("secret", selectors=["vault:name:secret"], store_svid=True, created=3),
    )
    await fake_clock.advance(10)
    await agent.sync.sync_now()
    synced_at = fake_clock.now()
    await agent.cache.fetch_jwt_svid(agent.cache.entries()[0], ["aud"])
    await fake_clock.advance(3)

    info = await agent.stub.get_info(debug_pb.GetInfoRequest())
    assert info.cached_x509_svids_count == 2
    assert info.svids_count == 2  # deprecated, still sent for older clients
    assert info.cached_jwt_svids_count == 1
    assert info.cached_svidstore_x509_svids_count == 1
    assert info.last_sync_success == int(synced_at.timestamp())
    assert info.uptime == 13


async def test_an_agent_svid_the_bundle_does_not_sign_is_an_internal_error(agent: Agent) -> None:
    agent.credentials.bundle = Bundle(
        trust_domain=agent.server.bundle.trust_domain,
        x509_authorities=(FakeCa(agent.server.clock).authority,),
    )
    with pytest.raises(GRPCError) as raised:
        await agent.stub.get_info(debug_pb.GetInfoRequest())
    assert raised.value.status is Status.INTERNAL


def test_the_method_has_spires_name() -> None:
    mapping = DebugService.__mapping__(object.__new__(DebugService))
    assert list(mapping) == ["/spire.agent.debug.v1.Debug/GetInfo"]
