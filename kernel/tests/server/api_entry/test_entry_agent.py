"""What agents get: GetAuthorizedEntries and SyncAuthorizedEntries, from memory, with node
aliases and descendants, in pages that never exceed the response limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_pb
from pyspire.proto.gen.codec import spire_api_types as pb
from pyspire.proto.messages import EncodedMessage
from pyspire.server.api.encoded import MAX_RESPONSE_BYTES
from pyspire.server.api.entry import SYNC_PAGE_SIZE, EntryService
from pyspire.server.context import ServerContext
from pyspire.transport.calls import set_caller
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

from .conftest import AGENT, OTHER_AGENT, SERVER, create_entries, wire_entry

AsAgent = Callable[[SpiffeId], None]


async def _authorized(service: EntryService, mask: pb.EntryMask | None = None) -> list[pb.Entry]:
    request = entry_pb.GetAuthorizedEntriesRequest()
    if mask is not None:
        request.output_mask = mask
    return list((await service.get_authorized_entries(request)).decode().entries)


@pytest.fixture
async def tree(entry_service: EntryService, server_context: ServerContext) -> dict[str, pb.Entry]:
    """Entries reached directly, through descendants and through a node alias, and some that
    are not the agent's."""
    await server_context.datastore.set_node_selectors(
        AGENT, (Selector("tpm", "pcr:1"), Selector("region", "eu"))
    )
    created = await create_entries(
        entry_service,
        wire_entry("/direct"),
        wire_entry("/child", parent_id="spiffe://example.org/direct"),
        wire_entry("/grandchild", parent_id="spiffe://example.org/child"),
        wire_entry("/alias", parent_id=SERVER, selectors=(("tpm", "pcr:1"),)),
        wire_entry("/via-alias", parent_id="spiffe://example.org/alias"),
        wire_entry(
            "/alias-eu-us", parent_id=SERVER, selectors=(("region", "eu"), ("region", "us"))
        ),
        wire_entry("/via-unmatched", parent_id="spiffe://example.org/alias-eu-us"),
        wire_entry("/other", parent_id=OTHER_AGENT),
    )
    return {entry.spiffe_id.path: entry for entry in created}


async def test_get_authorized_entries_follows_aliases_and_descendants(
    entry_service: EntryService, tree: dict[str, pb.Entry], as_agent: AsAgent
) -> None:
    as_agent(AGENT)
    entries = await _authorized(entry_service)
    assert {e.spiffe_id.path for e in entries} == {"/direct", "/child", "/grandchild", "/via-alias"}
    assert entries[0] == tree["/direct"]
    as_agent(OTHER_AGENT)
    assert [e.spiffe_id.path for e in await _authorized(entry_service)] == ["/other"]
    as_agent(SpiffeId.parse("spiffe://example.org/spire/agent/unknown"))
    assert await _authorized(entry_service) == []


async def test_get_authorized_entries_applies_the_mask(
    entry_service: EntryService, tree: dict[str, pb.Entry], as_agent: AsAgent
) -> None:
    as_agent(OTHER_AGENT)
    [entry] = await _authorized(entry_service, pb.EntryMask(spiffe_id=True, revision_number=True))
    assert entry == pb.Entry(id=tree["/other"].id, spiffe_id=tree["/other"].spiffe_id)


async def test_get_authorized_entries_makes_no_datastore_call(
    entry_service: EntryService,
    server_context: ServerContext,
    tree: dict[str, pb.Entry],
    as_agent: AsAgent,
) -> None:
    class Unreachable:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"datastore.{name} used on the agent path")

    server_context.datastore = Unreachable()  # type: ignore[assignment]
    as_agent(AGENT)
    assert len(await _authorized(entry_service)) == 4
    responses = [r async for r in entry_service.sync_authorized_entries(_requests(_first()))]
    assert len(responses[0].decode().entries) == 4


async def test_agent_calls_need_a_caller_id(entry_service: EntryService) -> None:
    with pytest.raises(GRPCError) as raised:
        await _authorized(entry_service)
    assert raised.value.status is Status.INTERNAL
    assert raised.value.message == "caller ID missing from request context"


async def test_get_authorized_entries_refuses_an_oversized_response(
    server_context: ServerContext, as_agent: AsAgent
) -> None:
    service = EntryService(server_context, max_response_bytes=1000)
    await create_entries(
        service, *(wire_entry(f"/w{n}", selectors=[("k8s", "v" * 300)]) for n in range(4))
    )
    as_agent(AGENT)
    with pytest.raises(GRPCError) as raised:
        await _authorized(service)
    assert raised.value.status is Status.RESOURCE_EXHAUSTED
    assert "use SyncAuthorizedEntries" in str(raised.value.message)


async def test_changes_reach_agents_right_after_the_write(
    entry_service: EntryService, tree: dict[str, pb.Entry], as_agent: AsAgent
) -> None:
    as_agent(OTHER_AGENT)
    [before] = await _authorized(entry_service)
    await entry_service.batch_update_entry(
        entry_pb.BatchUpdateEntryRequest(
            entries=[pb.Entry(id=before.id, hint="changed")], input_mask=pb.EntryMask(hint=True)
        )
    )
    [after] = await _authorized(entry_service)
    assert (after.hint, after.revision_number) == ("changed", before.revision_number + 1)
    await entry_service.batch_delete_entry(entry_pb.BatchDeleteEntryRequest(ids=[before.id]))
    assert await _authorized(entry_service) == []


# -- SyncAuthorizedEntries --------------------------------------------------------------------


def _first(mask: pb.EntryMask | None = None) -> entry_pb.SyncAuthorizedEntriesRequest:
    request = entry_pb.SyncAuthorizedEntriesRequest()
    if mask is not None:
        request.output_mask = mask
    return request


async def _requests(
    *requests: entry_pb.SyncAuthorizedEntriesRequest,
) -> AsyncIterator[entry_pb.SyncAuthorizedEntriesRequest]:
    for request in requests:
        yield request


class Agent:
    """Drives one sync call the way an agent does: requests go in through a queue."""

    def __init__(self, service: EntryService) -> None:
        self._queue: asyncio.Queue[entry_pb.SyncAuthorizedEntriesRequest | None] = asyncio.Queue()
        self._responses = service.sync_authorized_entries(self._incoming())

    async def _incoming(self) -> AsyncIterator[entry_pb.SyncAuthorizedEntriesRequest]:
        while (request := await self._queue.get()) is not None:
            yield request

    def send(self, request: entry_pb.SyncAuthorizedEntriesRequest) -> None:
        self._queue.put_nowait(request)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def receive(self) -> EncodedMessage[entry_pb.SyncAuthorizedEntriesResponse]:
        return await anext(self._responses)

    async def receive_until_done(self) -> list[entry_pb.SyncAuthorizedEntriesResponse]:
        pages = []
        while True:
            prebuilt = await self.receive()
            assert len(bytes(prebuilt)) <= MAX_RESPONSE_BYTES
            page = prebuilt.decode()
            pages.append(page)
            if not page.more:
                return pages

    async def finished(self) -> bool:
        try:
            await anext(self._responses)
        except StopAsyncIteration:
            return True
        return False


async def test_sync_sends_a_small_set_at_once(
    entry_service: EntryService, tree: dict[str, pb.Entry], as_agent: AsAgent
) -> None:
    as_agent(AGENT)
    agent = Agent(entry_service)
    agent.send(_first(pb.EntryMask(spiffe_id=True)))
    [page] = await agent.receive_until_done()
    assert not page.entry_revisions
    assert [e.spiffe_id.path for e in page.entries] == [
        e.spiffe_id.path for e in await _authorized(entry_service)
    ]
    assert page.entries[0] == pb.Entry(id=tree["/direct"].id, spiffe_id=tree["/direct"].spiffe_id)
    assert await agent.finished()


async def test_sync_ends_quietly_when_the_agent_sends_nothing(
    entry_service: EntryService, as_agent: AsAgent
) -> None:
    as_agent(AGENT)
    assert [r async for r in entry_service.sync_authorized_entries(_requests())] == []


async def test_sync_of_many_entries_sends_revisions_then_requested_entries(
    entry_service: EntryService, as_agent: AsAgent
) -> None:
    count = 2 * SYNC_PAGE_SIZE + 101
    created = await create_entries(entry_service, *(wire_entry(f"/many/{n}") for n in range(count)))
    by_id = {entry.id: entry for entry in created}
    as_agent(AGENT)
    agent = Agent(entry_service)
    agent.send(_first())
    pages = await agent.receive_until_done()
    assert [len(page.entry_revisions) for page in pages] == [SYNC_PAGE_SIZE, SYNC_PAGE_SIZE, 101]
    assert [page.more for page in pages] == [True, True, False]
    assert all(not page.entries for page in pages)
    revisions = [revision for page in pages for revision in page.entry_revisions]
    assert [revision.id for revision in revisions] == [entry.id for entry in created]
    assert all(
        (r.revision_number, r.created_at) == (by_id[r.id].revision_number, by_id[r.id].created_at)
        for r in revisions
    )

    # The agent asks for some entries in full (with an unknown id and a repeat among them).
    wanted = [entry.id for entry in created[100:700]]
    agent.send(entry_pb.SyncAuthorizedEntriesRequest(ids=[*wanted, "unknown", wanted[0]]))
    answer = await agent.receive_until_done()
    assert [len(page.entries) for page in answer] == [SYNC_PAGE_SIZE, 100]
    assert [entry.id for page in answer for entry in page.entries] == wanted
    assert answer[0].entries[0] == by_id[wanted[0]]

    # A request for nothing known still gets an answer, so the agent never waits forever.
    agent.send(entry_pb.SyncAuthorizedEntriesRequest(ids=["unknown"]))
    [empty] = await agent.receive_until_done()
    assert (empty.entries, empty.entry_revisions, empty.more) == ([], [], False)

    agent.close()
    assert await agent.finished()


async def test_sync_pages_stay_under_the_4mb_limit(
    entry_service: EntryService, as_agent: AsAgent
) -> None:
    # 24 entries of ~200 KiB each: few enough for one page by count, too big for one response.
    selectors = [(f"label{n}", "v" * 1000) for n in range(200)]
    created = await create_entries(
        entry_service, *(wire_entry(f"/big/{n}", selectors=selectors) for n in range(24))
    )
    as_agent(AGENT)
    agent = Agent(entry_service)
    agent.send(_first())
    [revisions] = await agent.receive_until_done()
    assert len(revisions.entry_revisions) == 24
    assert not revisions.entries

    agent.send(entry_pb.SyncAuthorizedEntriesRequest(ids=[entry.id for entry in created]))
    answer = await agent.receive_until_done()
    assert len(answer) >= 2
    assert [entry.id for page in answer for entry in page.entries] == [e.id for e in created]
    assert len(answer[0].entries[0].selectors) == 200
    agent.close()
    assert await agent.finished()


async def test_sync_with_a_small_limit_and_page_size(
    server_context: ServerContext, as_agent: AsAgent
) -> None:
    service = EntryService(server_context, sync_page_size=3, max_response_bytes=700)
    created = await create_entries(
        service, *(wire_entry(f"/s/{n}", selectors=[("k8s", "v" * 100)]) for n in range(10))
    )
    as_agent(AGENT)
    agent = Agent(service)
    agent.send(_first())
    pages = []
    while True:
        prebuilt = await agent.receive()
        assert len(bytes(prebuilt)) <= 700
        page = prebuilt.decode()
        pages.append(page)
        if not page.more:
            break
    assert [len(page.entry_revisions) for page in pages] == [3, 3, 3, 1]
    agent.send(entry_pb.SyncAuthorizedEntriesRequest(ids=[e.id for e in created]))
    answer = []
    while True:
        prebuilt = await agent.receive()
        assert len(bytes(prebuilt)) <= 700
        page = prebuilt.decode()
        answer.append(page)
        if not page.more:
            break
    assert all(len(page.entries) <= 3 for page in answer)
    assert [e.id for page in answer for e in page.entries] == [e.id for e in created]
    agent.close()
    assert await agent.finished()


async def test_sync_refuses_an_entry_that_can_never_fit(
    server_context: ServerContext, as_agent: AsAgent
) -> None:
    service = EntryService(server_context, max_response_bytes=300)
    await create_entries(service, wire_entry("/huge", selectors=[("k8s", "v" * 400)]))
    as_agent(AGENT)
    with pytest.raises(GRPCError) as raised:
        [r async for r in service.sync_authorized_entries(_requests(_first()))]
    assert raised.value.status is Status.RESOURCE_EXHAUSTED


async def test_sync_needs_a_caller_id(entry_service: EntryService) -> None:
    set_caller(object())
    with pytest.raises(GRPCError) as raised:
        [r async for r in entry_service.sync_authorized_entries(_requests(_first()))]
    assert raised.value.status is Status.INTERNAL


async def _full_sync(service: EntryService) -> list[pb.Entry]:
    agent = Agent(service)
    agent.send(_first())
    [page] = await agent.receive_until_done()
    assert not page.entry_revisions
    assert await agent.finished()
    return list(page.entries)


async def test_sync_sends_the_kept_answer_until_something_it_depends_on_changes(
    entry_service: EntryService, server_context: ServerContext, as_agent: AsAgent
) -> None:
    """A full answer is made once and sent again while the registry's revision holds; a change
    of an entry, or an entry expiring (no revision change), makes a new one."""
    clock = server_context.clock
    assert isinstance(clock, FakeClock)
    expires = clock.now() + timedelta(minutes=10)
    lasting, expiring = await create_entries(
        entry_service,
        wire_entry("/lasting"),
        wire_entry("/expiring", expires_at=int(expires.timestamp())),
    )
    as_agent(AGENT)
    first = await _full_sync(entry_service)
    assert {e.id for e in first} == {lasting.id, expiring.id}
    assert await _full_sync(entry_service) == first
    assert entry_service.replies.hits == 1

    lasting.hint = "changed"
    await entry_service.batch_update_entry(entry_pb.BatchUpdateEntryRequest(entries=[lasting]))
    changed = await _full_sync(entry_service)
    assert {e.id: e.hint for e in changed}[lasting.id] == "changed"
    assert entry_service.replies.hits == 1

    await clock.advance(timedelta(minutes=11).total_seconds())
    assert [e.id for e in await _full_sync(entry_service)] == [lasting.id]
    as_agent(OTHER_AGENT)
    assert await _full_sync(entry_service) == []


async def test_sync_refuses_ids_on_the_first_request(
    entry_service: EntryService, as_agent: AsAgent
) -> None:
    as_agent(AGENT)
    agent = Agent(entry_service)
    agent.send(entry_pb.SyncAuthorizedEntriesRequest(ids=["some-id"]))
    with pytest.raises(InvalidArgumentError, match="specifying IDs on initial request"):
        await agent.receive()
