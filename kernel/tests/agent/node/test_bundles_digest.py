"""One call per steady-state sync: the agent fetches bundles only when the server's digest,
offered with SyncAuthorizedEntries' answer, says they changed (or when it offers none)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from pyspire.agent.client import ServerClient
from pyspire.agent.node_identity import NodeIdentity
from pyspire.agent.server_api import TrustBundles
from pyspire.catalog import Discovery
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import Agent, RunningServer, make_ca, workload_entry

GET_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetBundle"
GET_FEDERATED_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetFederatedBundle"
OTHER = TrustDomain("other.org")


async def sync(client: ServerClient, count: int) -> tuple[list[RegistrationEntry], TrustBundles]:
    """What the sync manager asks: the entries (once the server shows ``count``), then the
    bundles."""
    for _ in range(200):
        entries = await client.fetch_authorized_entries()
        if len(entries) == count:
            return entries, await client.fetch_bundles(entries)
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server never authorized {count} entries")


async def set_federated(server: RunningServer, der: bytes) -> None:
    async with server.admin() as channel:
        reply = await bundle_pb.BundleStub(channel).batch_set_federated_bundle(
            bundle_pb.BatchSetFederatedBundleRequest(
                bundle=[
                    pb.Bundle(trust_domain=OTHER.name, x509_authorities=[pb.X509Certificate(der)])
                ]
            )
        )
    assert reply.results[0].status.code == 0, reply.results[0].status.message


async def append_authority(server: RunningServer, der: bytes) -> None:
    async with server.admin() as channel:
        await bundle_pb.BundleStub(channel).append_bundle(
            bundle_pb.AppendBundleRequest(x509_authorities=[pb.X509Certificate(asn1=der)])
        )


async def attested(agent: Agent) -> tuple[NodeIdentity, ServerClient]:
    identity, client = await agent.build()
    await identity.start()
    return identity, client


async def test_an_unchanged_sync_is_one_call_and_a_changed_bundle_is_fetched_at_once(
    agent: Agent,
) -> None:
    server = agent.server
    identity, client = await attested(agent)
    await server.create_entries(workload_entry("/web", identity.spiffe_id))
    _, first = await sync(client, 1)
    assert first.bundle == await server.bundle()
    fetched = server.calls(GET_BUNDLE)

    for _ in range(3):
        _, again = await sync(client, 1)
        assert again.bundle == first.bundle
    assert server.calls(GET_BUNDLE) == fetched

    # The trust bundle changes (as a CA rotation changes it): the next sync fetches it.
    _, extra_ca, _ = make_ca("next ca")
    await append_authority(server, extra_ca)
    _, changed = await sync(client, 1)
    assert server.calls(GET_BUNDLE) == fetched + 1
    assert extra_ca in {authority.der for authority in changed.bundle.x509_authorities}
    await sync(client, 1)
    assert server.calls(GET_BUNDLE) == fetched + 1
    assert changed.bundle == await server.bundle()  # itself a GetBundle call, so last


async def test_federated_bundles_ride_the_same_digest(agent: Agent) -> None:
    server = agent.server
    identity, client = await attested(agent)
    _, ca, _ = make_ca("other ca")
    await set_federated(server, ca)
    await server.create_entries(
        workload_entry("/web", identity.spiffe_id, federates_with=[OTHER.name])
    )
    _, first = await sync(client, 1)
    assert [a.der for a in first.federated[OTHER].x509_authorities] == [ca]
    asked, fetched = server.calls(GET_FEDERATED_BUNDLE), server.calls(GET_BUNDLE)
    for _ in range(3):
        _, again = await sync(client, 1)
        assert again == first
    assert server.calls(GET_FEDERATED_BUNDLE) == asked
    assert server.calls(GET_BUNDLE) == fetched

    _, rotated, _ = make_ca("other ca, rotated")
    await set_federated(server, rotated)
    _, updated = await sync(client, 1)
    assert [a.der for a in updated.federated[OTHER].x509_authorities] == [rotated]
    assert server.calls(GET_FEDERATED_BUNDLE) == asked + 1
    await sync(client, 1)
    assert server.calls(GET_FEDERATED_BUNDLE) == asked + 1


async def test_an_entry_federating_anew_fetches_that_bundle(agent: Agent) -> None:
    server = agent.server
    identity, client = await attested(agent)
    _, ca, _ = make_ca("other ca")
    await set_federated(server, ca)
    await server.create_entries(workload_entry("/web", identity.spiffe_id))
    _, first = await sync(client, 1)
    assert first.federated == {}
    await server.create_entries(
        workload_entry("/api", identity.spiffe_id, federates_with=[OTHER.name])
    )
    _, second = await sync(client, 2)
    assert [a.der for a in second.federated[OTHER].x509_authorities] == [ca]


async def test_a_server_that_offers_no_digest_is_asked_for_the_bundle_every_sync(
    tmp_path: Path, discovery: Discovery
) -> None:
    server = RunningServer(tmp_path / "spire-like", discovery, offer_bundles=False)
    await server.start()
    agent = Agent(
        directory=tmp_path / "agent", server=server, clock=FakeClock(start=datetime.now(UTC))
    )
    try:
        agent.token = await server.join_token()
        identity, client = await attested(agent)
        await server.create_entries(workload_entry("/web", identity.spiffe_id))
        _, first = await sync(client, 1)
        fetched = server.calls(GET_BUNDLE)
        for number in range(1, 4):
            _, again = await sync(client, 1)
            assert again.bundle == first.bundle
            assert server.calls(GET_BUNDLE) == fetched + number
    finally:
        await agent.close()
        await server.stop()


async def test_a_bundle_fetch_outside_a_sync_never_uses_an_old_offer(agent: Agent) -> None:
    server = agent.server
    identity, client = await attested(agent)
    await server.create_entries(workload_entry("/web", identity.spiffe_id))
    entries, _ = await sync(client, 1)
    fetched = server.calls(GET_BUNDLE)
    # The offer came with the last entries and was used: without a new one, fetch.
    await client.fetch_bundles(entries)
    assert server.calls(GET_BUNDLE) == fetched + 1
