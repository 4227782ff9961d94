"""The Workload API over the real agent cache and sync manager (against the in-memory server):
entries beyond the cache bound are minted on a caller's first fetch, a stream waits (boundedly)
for its first SVID, nothing is refused before the first sync, and an expired SVID is never
served."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.sync import SyncManager
from pyspire.agent.workload import WorkloadApiService, WorkloadAttestation, WorkloadEndpoint
from pyspire.proto.gen import workload as pb
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.testing import FakeClock

from ..sync.conftest import eventually
from ..sync.fakes import FakeServerApi, entry
from .conftest import HEADER

ME = f"unix:uid:{os.getuid()}"
WAIT = 30.0
TIMEOUT = 10.0


@dataclass
class Agent:
    server: FakeServerApi
    cache: WorkloadCache
    sync: SyncManager
    clock: FakeClock
    stub: pb.SpiffeWorkloadApiStub


@pytest.fixture
async def agent(
    attestation: WorkloadAttestation, socket_dir: Path, fake_clock: FakeClock
) -> AsyncIterator[Agent]:
    server = FakeServerApi(fake_clock)
    cache = WorkloadCache(server, fake_clock, x509_svid_cache_max_size=3)
    sync = SyncManager(server, cache, fake_clock, interval=5)
    service = WorkloadApiService(cache, attestation, fake_clock, first_answer_wait=WAIT)
    endpoint = WorkloadEndpoint(socket_dir / "api.sock", service, drain_timeout=1)
    async with endpoint:
        channel = Channel(path=str(endpoint.socket_path))
        tasks = [asyncio.create_task(cache.run())]
        try:
            yield Agent(
                server, cache, sync, fake_clock, pb.SpiffeWorkloadApiStub(channel, metadata=HEADER)
            )
        finally:
            channel.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await cache.close()


async def first_x509(stub: pb.SpiffeWorkloadApiStub) -> pb.X509SvidResponse:
    """The first message of a new FetchX509SVID stream, then hang up (as one-shot clients do)."""
    stream = stub.fetch_x509_svid(pb.X509SvidRequest())
    try:
        async with asyncio.timeout(TIMEOUT):
            return await anext(stream)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def first_x509_error(stub: pb.SpiffeWorkloadApiStub) -> GRPCError:
    with pytest.raises(GRPCError) as raised:
        await first_x509(stub)
    return raised.value


def ids(response: pb.X509SvidResponse) -> list[str]:
    return sorted(svid.spiffe_id.rsplit("/", 1)[1] for svid in response.svids)


async def test_every_entry_beyond_the_bound_is_minted_for_the_callers_first_fetch(
    agent: Agent,
) -> None:
    agent.server.add(*(entry(f"e{index}", selectors=[ME], created=index) for index in range(5)))
    await agent.sync.sync_now()
    assert agent.cache.svid_count == 3  # the bound, pre-minted oldest first

    running = asyncio.create_task(agent.sync.run())
    try:
        await eventually(lambda: agent.clock.sleepers >= 1)
        response = await first_x509(agent.stub)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    assert ids(response) == ["e0", "e1", "e2", "e3", "e4"]
    # Minted in one batch, without fetching the entries again.
    assert agent.server.batches[-1] == ["e3", "e4"]
    assert agent.server.calls["fetch_authorized_entries"] == 2


async def test_an_entry_for_another_caller_beyond_a_full_cache_is_served(agent: Agent) -> None:
    agent.server.add(
        *(
            entry(f"other{index}", selectors=["unix:uid:99999"], created=index)
            for index in range(3)
        ),
        entry("mine", selectors=[ME], created=10),
    )
    await agent.sync.sync_now()
    assert agent.cache.issued("mine") is None

    running = asyncio.create_task(agent.sync.run())
    try:
        await eventually(lambda: agent.clock.sleepers >= 1)
        response = await first_x509(agent.stub)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert ids(response) == ["mine"]


async def test_a_stream_waits_for_a_missing_svid_at_most_the_bound(agent: Agent) -> None:
    agent.server.add(*(entry(f"e{index}", selectors=[ME], created=index) for index in range(4)))
    await agent.sync.sync_now()
    agent.server.refuse["e3"] = "quota exceeded"  # the missing SVID never comes
    pending = asyncio.ensure_future(first_x509(agent.stub))
    await eventually(lambda: agent.clock.sleepers >= 1)
    await agent.sync.mint_now()
    await asyncio.sleep(0.05)
    assert not pending.done()

    await agent.clock.advance(WAIT)
    response = await pending
    assert ids(response) == ["e0", "e1", "e2"]  # what there is, once the wait is over


async def test_nothing_is_refused_before_the_first_sync(agent: Agent) -> None:
    agent.server.add(entry("web", selectors=[ME]))
    pending = asyncio.ensure_future(first_x509(agent.stub))
    await eventually(lambda: agent.clock.sleepers >= 1)
    assert not pending.done()
    with pytest.raises(GRPCError) as jwt:
        await agent.stub.fetch_jwtsvid(pb.JwtsvidRequest(audience=["db"]))
    assert jwt.value.status is Status.UNAVAILABLE

    await agent.sync.sync_now()
    assert ids(await pending) == ["web"]


async def test_a_failed_first_sync_answers_unavailable_at_once(agent: Agent) -> None:
    agent.server.add(entry("web", selectors=[ME]))
    agent.server.unavailable = True
    with pytest.raises(UnavailableError):
        await agent.sync.sync_now()
    error = await first_x509_error(agent.stub)
    assert error.status is Status.UNAVAILABLE
    assert error.message == "agent has not synced its entries yet"


async def test_an_expired_svid_is_not_served_and_the_caller_is_told_to_retry(
    agent: Agent,
) -> None:
    agent.server.add(entry("web", selectors=[ME], x509_svid_ttl=90))
    await agent.sync.sync_now()
    issued = agent.cache.issued("web")
    assert issued is not None
    stream = agent.stub.fetch_x509_svid(pb.X509SvidRequest())
    async with asyncio.timeout(TIMEOUT):
        assert ids(await anext(stream)) == ["web"]

    agent.server.unavailable = True
    with pytest.raises(UnavailableError):
        await agent.sync.sync_now()
    await agent.clock.set(issued.not_after)

    # The open stream ends: its SVID expired and no new one can come.
    with pytest.raises(GRPCError) as ended:
        async with asyncio.timeout(TIMEOUT):
            await anext(stream)
    assert ended.value.status is Status.UNAVAILABLE
    # New callers are told to retry, not that they have no identity.
    error = await first_x509_error(agent.stub)
    assert error.status is Status.UNAVAILABLE
    assert error.message == "no valid x509 svid for the caller yet"

    agent.server.unavailable = False
    await agent.sync.sync_now()
    assert ids(await first_x509(agent.stub)) == ["web"]


async def test_a_caller_without_an_entry_is_still_denied(agent: Agent) -> None:
    agent.server.add(entry("other", selectors=["unix:uid:99999"]))
    await agent.sync.sync_now()
    error = await first_x509_error(agent.stub)
    assert error.status is Status.PERMISSION_DENIED
