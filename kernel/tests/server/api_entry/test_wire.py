"""The Entry, Debug and Health services through a real grpclib server on a unix socket:
prebuilt responses reach a client intact, statuses cross the wire, and the policy holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpclib.const
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from pyspire.proto.gen.grpc.health import v1 as health_pb
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.debug import v1 as debug_pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire.proto.messages import EncodedMessage
from pyspire.server.api.debug import DebugService
from pyspire.server.api.entry import EntryService
from pyspire.server.api.health import HealthService
from pyspire.server.authorization import Caller, CallerKind, allowed
from pyspire.server.context import ServerContext
from pyspire.transport.calls import WithCallContext, set_caller
from pyspire_sdk.spiffeid import SpiffeId

from .conftest import AGENT
from .conftest import wire_entry as codec_entry

AGENT_HEADER = "x-test-agent"


def wire_entry(path: str, **fields: Any) -> pb.Entry:
    """A betterproto entry, as a betterproto client sends it (the services speak codecs)."""
    return pb.Entry().parse(codec_entry(path, **fields).SerializeToString())


async def _gate(method: str, stream: Stream[Any, Any]) -> None:
    """Local callers, unless the test names an agent in a header; the real policy applies."""
    agent = dict(stream.metadata or {}).get(AGENT_HEADER)
    if isinstance(agent, str):
        caller = Caller(kinds=frozenset({CallerKind.AGENT}), spiffe_id=SpiffeId.parse(agent))
    else:
        caller = Caller(kinds=frozenset({CallerKind.LOCAL}))
    if not allowed(method, caller):
        raise GRPCError(Status.PERMISSION_DENIED, f"{method} is not allowed")
    set_caller(caller)


@pytest.fixture
async def channel(server_context: ServerContext, tmp_path: Path) -> AsyncIterator[Channel]:
    socket = str(tmp_path / "api.sock")
    services = [
        EntryService(server_context, sync_page_size=4),
        DebugService(server_context),
        HealthService(server_context),
    ]
    server = Server([WithCallContext(service, _gate) for service in services])
    await server.start(path=socket)
    channel = Channel(path=socket)
    try:
        yield channel
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


AS_AGENT = {AGENT_HEADER: str(AGENT)}


async def test_admin_calls_over_the_wire(channel: Channel) -> None:
    stub = entry_pb.EntryStub(channel)
    created = await stub.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(
            entries=[wire_entry(f"/w{n}") for n in range(5)] + [wire_entry("/bad", selectors=())]
        )
    )
    assert [r.status.code for r in created.results] == [0] * 5 + [Status.INVALID_ARGUMENT.value]
    assert "selectors" in created.results[5].status.message
    ids = [r.entry.id for r in created.results[:5]]

    first = await stub.list_entries(entry_pb.ListEntriesRequest(page_size=3))
    rest = await stub.list_entries(
        entry_pb.ListEntriesRequest(page_size=3, page_token=first.next_page_token)
    )
    assert [e.id for e in first.entries + rest.entries] == ids
    assert rest.next_page_token == ""
    count = await stub.count_entries(
        entry_pb.CountEntriesRequest(
            filter=entry_pb.ListEntriesRequestFilter(
                by_spiffe_id=pb.Spiffeid(trust_domain="example.org", path="/w2")
            )
        )
    )
    assert count.count == 1

    entry = await stub.get_entry(entry_pb.GetEntryRequest(id=ids[0]))
    assert entry.spiffe_id.path == "/w0"
    with pytest.raises(GRPCError) as raised:
        await stub.get_entry(entry_pb.GetEntryRequest(id="missing"))
    assert (raised.value.status, raised.value.message) == (Status.NOT_FOUND, "entry not found")
    with pytest.raises(GRPCError) as raised:
        await stub.list_entries(entry_pb.ListEntriesRequest(page_size=2, page_token="x"))
    assert raised.value.status is Status.INVALID_ARGUMENT
    assert "page_token" in str(raised.value.message)

    deleted = await stub.batch_delete_entry(entry_pb.BatchDeleteEntryRequest(ids=ids[:2]))
    assert [r.status.code for r in deleted.results] == [0, 0]


async def test_agent_calls_over_the_wire(channel: Channel) -> None:
    stub = entry_pb.EntryStub(channel)
    created = await stub.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(entries=[wire_entry(f"/a{n}") for n in range(10)])
    )
    ids = [r.entry.id for r in created.results]

    response = await stub.get_authorized_entries(
        entry_pb.GetAuthorizedEntriesRequest(output_mask=pb.EntryMask(spiffe_id=True)),
        metadata=AS_AGENT,
    )
    assert [e.id for e in response.entries] == ids
    assert response.entries[3] == pb.Entry(
        id=ids[3], spiffe_id=pb.Spiffeid(trust_domain="example.org", path="/a3")
    )

    # An agent may not administer entries; an admin caller is not an agent.
    with pytest.raises(GRPCError) as raised:
        await stub.list_entries(entry_pb.ListEntriesRequest(), metadata=AS_AGENT)
    assert raised.value.status is Status.PERMISSION_DENIED
    with pytest.raises(GRPCError) as raised:
        await stub.get_authorized_entries(entry_pb.GetAuthorizedEntriesRequest())
    assert raised.value.status is Status.PERMISSION_DENIED


async def test_sync_over_the_wire(channel: Channel) -> None:
    stub = entry_pb.EntryStub(channel)
    created = await stub.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(entries=[wire_entry(f"/s{n}") for n in range(10)])
    )
    ids = [r.entry.id for r in created.results]
    async with channel.request(
        "/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries",
        grpclib.const.Cardinality.STREAM_STREAM,
        entry_pb.SyncAuthorizedEntriesRequest,
        entry_pb.SyncAuthorizedEntriesResponse,
        metadata=AS_AGENT,
    ) as stream:
        await stream.send_message(entry_pb.SyncAuthorizedEntriesRequest())
        pages = []
        while True:
            page = await stream.recv_message()
            assert page is not None
            pages.append(page)
            if not page.more:
                break
        assert [len(p.entry_revisions) for p in pages] == [4, 4, 2]
        assert [r.id for p in pages for r in p.entry_revisions] == ids

        await stream.send_message(entry_pb.SyncAuthorizedEntriesRequest(ids=ids[2:8]), end=True)
        answer = []
        while True:
            page = await stream.recv_message()
            assert page is not None
            answer.append(page)
            if not page.more:
                break
        assert [len(p.entries) for p in answer] == [4, 2]
        assert [e.id for p in answer for e in p.entries] == ids[2:8]
        assert await stream.recv_message() is None
        await stream.recv_trailing_metadata()
        assert stream.trailing_metadata is not None


async def test_debug_and_health_over_the_wire(channel: Channel) -> None:
    info = await debug_pb.DebugStub(channel).get_info(debug_pb.GetInfoRequest())
    assert info.uptime == 0
    assert info.entries_count == 0
    health = health_pb.HealthStub(channel)
    checked = await health.check(health_pb.HealthCheckRequest(service="spire.server"))
    assert checked.status == health_pb.HealthCheckResponseServingStatus.SERVING
    with pytest.raises(GRPCError) as raised:
        await health.check(health_pb.HealthCheckRequest(service="unknown"))
    assert raised.value.status is Status.NOT_FOUND
    async for message in health.watch(health_pb.HealthCheckRequest()):
        assert message.status == health_pb.HealthCheckResponseServingStatus.SERVING
        break


def test_every_route_of_the_generated_service_is_served_with_codecs(
    server_context: ServerContext,
) -> None:
    ours = EntryService(server_context).__mapping__()
    generated = entry_pb.EntryBase().__mapping__()
    assert set(ours) == set(generated)
    for path, handler in ours.items():
        assert handler.cardinality is generated[path].cardinality, path
        assert handler.request_type.__name__ == generated[path].request_type.__name__, path
        assert handler.request_type.__module__.startswith("pyspire.proto.gen.codec."), path
        assert handler.reply_type is EncodedMessage, path
