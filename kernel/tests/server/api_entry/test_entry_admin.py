"""Entry administration: create, read, update, delete, count and list with filters, paging and
masks; every bad input gets a precise status naming the field, and a failing batch item leaves
no trace."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.entries import framed_entry_size
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_pb
from pyspire.proto.gen.codec import spire_api_types as pb
from pyspire.proto.gen.spire.api import types as pb_types
from pyspire.server.api.entry import EntryService
from pyspire.server.context import ServerContext
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import AGENT, OTHER_AGENT, SERVER, create_entries, wire_entry, wire_id

INVALID = Status.INVALID_ARGUMENT.value


async def _create(service: EntryService, *entries: pb.Entry) -> entry_pb.BatchCreateEntryResponse:
    request = entry_pb.BatchCreateEntryRequest(entries=list(entries))
    return (await service.batch_create_entry(request)).decode()


async def _list(service: EntryService, **request: Any) -> list[pb.Entry]:
    response = await service.list_entries(entry_pb.ListEntriesRequest(**request))
    return list(response.decode().entries)


async def _paths(service: EntryService, filter: entry_pb.ListEntriesRequest_Filter) -> set[str]:
    return {entry.spiffe_id.path for entry in await _list(service, filter=filter)}


async def _count(service: EntryService, filter: entry_pb.ListEntriesRequest_Filter) -> int:
    response = await service.count_entries(entry_pb.CountEntriesRequest(filter=filter))
    return response.decode().count


# -- create ---------------------------------------------------------------------------------


async def test_create_stores_the_entry_and_the_registry_sees_it(
    entry_service: EntryService, server_context: ServerContext, fake_clock: FakeClock
) -> None:
    response = await _create(
        entry_service,
        wire_entry(
            "/web",
            x509_svid_ttl=600,
            jwt_svid_ttl=60,
            dns_names=["web.example.org"],
            hint="web",
            admin=True,
            expires_at=int((fake_clock.now() + timedelta(days=1)).timestamp()),
        ),
    )
    [result] = response.results
    assert (result.status.code, result.status.message) == (0, "OK")
    stored = result.entry
    assert stored.id
    assert stored.spiffe_id == wire_id("spiffe://example.org/web")
    assert stored.parent_id == wire_id(AGENT)
    assert (stored.x509_svid_ttl, stored.jwt_svid_ttl, stored.hint) == (600, 60, "web")
    assert stored.dns_names == ["web.example.org"]
    assert stored.admin
    assert stored.revision_number == 0
    assert stored.created_at == int(fake_clock.now().timestamp())
    # Agents see it without waiting for the cache interval.
    cached = server_context.registry.get_entry(stored.id)
    assert cached is not None
    assert cached.hint == "web"
    assert [e.id for e in server_context.registry.authorized_entries(AGENT)] == [stored.id]


async def test_create_keeps_a_valid_given_id_and_rejects_a_bad_one(
    entry_service: EntryService,
) -> None:
    response = await _create(
        entry_service,
        wire_entry("/a", id="my-entry.1"),
        wire_entry("/b", id="bad id!"),
        wire_entry("/c", id="x" * 256),
    )
    ok, bad_chars, too_long = response.results
    assert ok.status.code == 0
    assert ok.entry.id == "my-entry.1"
    assert bad_chars.status.code == INVALID
    assert "id 'bad id!'" in bad_chars.status.message
    assert too_long.status.code == INVALID
    assert "id is 256 characters" in too_long.status.message
    assert len(await _list(entry_service)) == 1


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (pb.Entry(parent_id=wire_id(AGENT), selectors=[pb.Selector("a", "b")]), "spiffe_id"),
        (
            pb.Entry(
                spiffe_id=pb.SPIFFEID(trust_domain="Bad Domain", path="/x"),
                parent_id=wire_id(AGENT),
                selectors=[pb.Selector("a", "b")],
            ),
            "spiffe_id",
        ),
        (wire_entry("/x", parent_id="spiffe://other.org/agent"), "parent_id"),
        (wire_entry("/spire/agent/sneaky"), "spiffe_id"),
        (wire_entry("/x", selectors=()), "selectors"),
        (wire_entry("/x", selectors=(("unix", ""),)), "selectors[0]"),
        (wire_entry("/x", selectors=(("a:b", "c"),)), "selectors[0]"),
        (wire_entry("/x", x509_svid_ttl=-1), "x509_svid_ttl"),
        (wire_entry("/x", dns_names=["bad_name!"]), "dns_names[0]"),
        (wire_entry("/x", federates_with=["example.org"]), "federates_with[0]"),
        (wire_entry("/x", federates_with=["Not A Domain"]), "federates_with[0]"),
        (wire_entry("/x", hint="h" * 1025), "hint"),
        (wire_entry("/x", expires_at=1), "expires_at"),
    ],
    ids=[
        "missing-spiffe-id",
        "malformed-trust-domain",
        "foreign-parent",
        "reserved-path",
        "no-selectors",
        "empty-selector-value",
        "selector-type-colon",
        "negative-ttl",
        "bad-dns-name",
        "federates-with-self",
        "bad-federated-domain",
        "long-hint",
        "expired",
    ],
)
async def test_create_rejects_bad_entries_naming_the_field(
    entry_service: EntryService, entry: pb.Entry, expected: str
) -> None:
    [result] = (await _create(entry_service, entry)).results
    assert result.status.code == INVALID, result.status.message
    assert result.status.message.startswith("failed to convert entry: ")
    assert expected in result.status.message
    assert result.entry is None
    assert await _list(entry_service) == []


async def test_create_reports_a_similar_entry_with_the_existing_one(
    entry_service: EntryService,
) -> None:
    [first] = await create_entries(entry_service, wire_entry("/dup", hint="first"))
    response = await _create(
        entry_service,
        wire_entry("/dup", hint="second"),
        wire_entry("/dup", selectors=(("unix", "uid:1000"), ("unix", "gid:1"))),
    )
    duplicate, distinct = response.results
    assert duplicate.status.code == Status.ALREADY_EXISTS.value
    assert duplicate.status.message == "similar entry already exists"
    assert duplicate.entry.id == first.id
    assert duplicate.entry.hint == "first"
    assert distinct.status.code == 0
    assert len(await _list(entry_service)) == 2


async def test_a_failing_item_does_not_stop_the_others(entry_service: EntryService) -> None:
    response = await _create(
        entry_service,
        wire_entry("/one"),
        wire_entry("/two", selectors=()),
        wire_entry("/three", federates_with=["unknown.org"]),
        wire_entry("/four"),
    )
    codes = [result.status.code for result in response.results]
    assert codes == [0, INVALID, INVALID, 0]
    assert "unknown.org" in response.results[2].status.message
    assert {e.spiffe_id.path for e in await _list(entry_service)} == {"/one", "/four"}


async def test_create_applies_the_output_mask(entry_service: EntryService) -> None:
    response = await entry_service.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(
            entries=[wire_entry("/masked", hint="h")], output_mask=pb.EntryMask(hint=True)
        )
    )
    entry = response.decode().results[0].entry
    assert entry.id
    assert entry.hint == "h"
    assert not entry.selectors
    assert entry.spiffe_id is None


async def test_node_alias_entries_are_accepted(entry_service: EntryService) -> None:
    [alias] = await create_entries(
        entry_service, wire_entry("/alias", parent_id=SERVER, selectors=(("tpm", "pcr"),))
    )
    assert alias.parent_id == wire_id(SERVER)


# -- get --------------------------------------------------------------------------------------


async def test_get_entry(entry_service: EntryService) -> None:
    [stored] = await create_entries(entry_service, wire_entry("/get", hint="x"))
    found = await entry_service.get_entry(entry_pb.GetEntryRequest(id=stored.id))
    assert found.decode() == stored
    masked = await entry_service.get_entry(
        entry_pb.GetEntryRequest(id=stored.id, output_mask=pb.EntryMask(spiffe_id=True))
    )
    assert masked.decode() == pb.Entry(id=stored.id, spiffe_id=stored.spiffe_id)
    with pytest.raises(NotFoundError, match="entry not found"):
        await entry_service.get_entry(entry_pb.GetEntryRequest(id="nope"))
    with pytest.raises(InvalidArgumentError, match="missing ID"):
        await entry_service.get_entry(entry_pb.GetEntryRequest())


# -- update -----------------------------------------------------------------------------------


async def _update(
    service: EntryService, *entries: pb.Entry, mask: pb.EntryMask | None = None
) -> list[entry_pb.BatchUpdateEntryResponse_Result]:
    request = entry_pb.BatchUpdateEntryRequest(entries=list(entries))
    if mask is not None:
        request.input_mask = mask
    return list((await service.batch_update_entry(request)).decode().results)


async def test_update_with_a_mask_changes_only_those_fields(
    entry_service: EntryService, server_context: ServerContext
) -> None:
    [stored] = await create_entries(entry_service, wire_entry("/upd", hint="old", x509_svid_ttl=5))
    # Fields outside the mask may be missing or even invalid: they are not looked at.
    change = pb.Entry(id=stored.id, hint="new", x509_svid_ttl=-5, selectors=[])
    [result] = await _update(entry_service, change, mask=pb.EntryMask(hint=True))
    assert result.status.code == 0, result.status.message
    assert result.entry.hint == "new"
    assert result.entry.x509_svid_ttl == 5
    assert result.entry.selectors == stored.selectors
    assert result.entry.revision_number == stored.revision_number + 1
    cached = server_context.registry.get_entry(stored.id)
    assert cached is not None
    assert (cached.hint, cached.revision_number) == ("new", 1)


async def test_update_without_a_mask_replaces_every_field(entry_service: EntryService) -> None:
    [stored] = await create_entries(entry_service, wire_entry("/full", hint="old", admin=True))
    replacement = wire_entry("/full-renamed", parent_id=OTHER_AGENT, selectors=(("k8s", "ns:a"),))
    replacement.id = stored.id
    [result] = await _update(entry_service, replacement)
    assert result.status.code == 0, result.status.message
    entry = result.entry
    assert entry.spiffe_id.path == "/full-renamed"
    assert entry.parent_id == wire_id(OTHER_AGENT)
    assert not entry.admin
    assert entry.hint == ""
    assert entry.revision_number == 1


async def test_update_per_item_errors(entry_service: EntryService) -> None:
    first, second = await create_entries(entry_service, wire_entry("/u1"), wire_entry("/u2"))
    results = await _update(
        entry_service,
        pb.Entry(id="missing", hint="x"),
        pb.Entry(hint="no id"),
        pb.Entry(id=first.id, selectors=[pb.Selector("unix", "")]),
        pb.Entry(id=second.id, hint="fine", selectors=second.selectors),
        mask=pb.EntryMask(hint=True, selectors=True),
    )
    statuses = [(r.status.code, r.status.message) for r in results]
    assert statuses[0] == (Status.NOT_FOUND.value, "entry not found")
    assert statuses[1] == (INVALID, "failed to convert entry: missing ID")
    assert statuses[2][0] == INVALID
    assert "selectors[0]" in statuses[2][1]
    assert statuses[3] == (0, "OK")
    # A mask naming spiffe_id needs one: an item without it is refused before any lookup.
    [no_id] = await _update(
        entry_service, pb.Entry(id=second.id, hint="x"), mask=pb.EntryMask(spiffe_id=True)
    )
    assert no_id.status.code == INVALID
    assert "spiffe_id" in no_id.status.message
    # Becoming a copy of another entry is refused.
    [duplicate] = await _update(
        entry_service,
        pb.Entry(id=second.id, spiffe_id=first.spiffe_id),
        mask=pb.EntryMask(spiffe_id=True),
    )
    assert duplicate.status.code == Status.ALREADY_EXISTS.value
    assert duplicate.status.message.startswith("failed to update entry: ")
    listed = {e.id: e for e in await _list(entry_service)}
    assert listed[first.id].revision_number == 0
    assert (listed[second.id].spiffe_id.path, listed[second.id].hint) == ("/u2", "fine")
    assert listed[second.id].revision_number == 1


async def test_update_rejects_a_past_expiry(entry_service: EntryService) -> None:
    [stored] = await create_entries(entry_service, wire_entry("/exp"))
    [result] = await _update(
        entry_service, pb.Entry(id=stored.id, expires_at=10), mask=pb.EntryMask(expires_at=True)
    )
    assert result.status.code == INVALID
    assert "expires_at" in result.status.message


# -- delete -----------------------------------------------------------------------------------


async def test_delete(entry_service: EntryService, server_context: ServerContext) -> None:
    [stored] = await create_entries(entry_service, wire_entry("/del"))
    response = await entry_service.batch_delete_entry(
        entry_pb.BatchDeleteEntryRequest(ids=[stored.id, "missing", "", stored.id])
    )
    assert [(r.id, r.status.code, r.status.message) for r in response.decode().results] == [
        (stored.id, 0, "OK"),
        ("missing", Status.NOT_FOUND.value, "entry not found"),
        ("", INVALID, "missing entry ID"),
        (stored.id, Status.NOT_FOUND.value, "entry not found"),
    ]
    assert server_context.registry.get_entry(stored.id) is None
    assert await _list(entry_service) == []


# -- count and list ---------------------------------------------------------------------------


@pytest.fixture
async def catalog(entry_service: EntryService, server_context: ServerContext) -> list[pb.Entry]:
    for name in ("a.org", "b.org", "c.org"):
        await server_context.datastore.set_bundle(Bundle(trust_domain=TrustDomain(name)))
    return await create_entries(
        entry_service,
        wire_entry("/s1", selectors=(("t", "1"),), federates_with=["a.org"], hint="front"),
        wire_entry("/s12", selectors=(("t", "1"), ("t", "2")), federates_with=["a.org", "b.org"]),
        wire_entry("/s123", selectors=(("t", "1"), ("t", "2"), ("t", "3")), hint="front"),
        wire_entry("/s3", parent_id=OTHER_AGENT, selectors=(("t", "3"),), federates_with=["c.org"]),
    )


def _selectors(*values: str, match: int) -> entry_pb.ListEntriesRequest_Filter:
    return entry_pb.ListEntriesRequest_Filter(
        by_selectors=pb.SelectorMatch(
            selectors=[pb.Selector("t", value) for value in values],
            match=pb_types.SelectorMatchMatchBehavior(match),
        )
    )


def _federates(*domains: str, match: int) -> entry_pb.ListEntriesRequest_Filter:
    return entry_pb.ListEntriesRequest_Filter(
        by_federates_with=pb.FederatesWithMatch(
            trust_domains=list(domains), match=pb_types.FederatesWithMatchMatchBehavior(match)
        )
    )


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        (entry_pb.ListEntriesRequest_Filter(), {"/s1", "/s12", "/s123", "/s3"}),
        (
            entry_pb.ListEntriesRequest_Filter(by_spiffe_id=wire_id("spiffe://example.org/s12")),
            {"/s12"},
        ),
        (entry_pb.ListEntriesRequest_Filter(by_parent_id=wire_id(OTHER_AGENT)), {"/s3"}),
        (entry_pb.ListEntriesRequest_Filter(by_hint="front"), {"/s1", "/s123"}),
        (_selectors("1", "2", match=0), {"/s12"}),
        (_selectors("1", "2", match=1), {"/s1", "/s12"}),
        (_selectors("1", "2", match=2), {"/s12", "/s123"}),
        (_selectors("2", "3", match=3), {"/s12", "/s123", "/s3"}),
        (_federates("a.org", "b.org", match=0), {"/s12"}),
        (_federates("a.org", "b.org", match=1), {"/s1", "/s12"}),
        (_federates("a.org", match=2), {"/s1", "/s12"}),
        (_federates("b.org", "c.org", match=3), {"/s12", "/s3"}),
        (
            entry_pb.ListEntriesRequest_Filter(
                by_parent_id=wire_id(AGENT),
                by_hint="front",
                by_selectors=pb.SelectorMatch(
                    selectors=[pb.Selector("t", "3")],
                    match=pb_types.SelectorMatchMatchBehavior(
                        pb_types.SelectorMatchMatchBehavior.MATCH_SUPERSET
                    ),
                ),
            ),
            {"/s123"},
        ),
    ],
    ids=[
        "none",
        "by-spiffe-id",
        "by-parent-id",
        "by-hint",
        "selectors-exact",
        "selectors-subset",
        "selectors-superset",
        "selectors-any",
        "federates-exact",
        "federates-subset",
        "federates-superset",
        "federates-any",
        "combined",
    ],
)
async def test_filters(
    entry_service: EntryService,
    catalog: list[pb.Entry],
    filter: entry_pb.ListEntriesRequest_Filter,
    expected: set[str],
) -> None:
    assert await _paths(entry_service, filter) == expected
    assert await _count(entry_service, filter) == len(expected)


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        (
            entry_pb.ListEntriesRequest_Filter(by_spiffe_id=wire_id("spiffe://other.org/x")),
            "filter.by_spiffe_id: 'spiffe://other.org/x' is not a member",
        ),
        (
            entry_pb.ListEntriesRequest_Filter(
                by_parent_id=pb.SPIFFEID(trust_domain="", path="/x")
            ),
            "filter.by_parent_id: trust domain is missing",
        ),
        (
            entry_pb.ListEntriesRequest_Filter(
                by_spiffe_id=pb.SPIFFEID(trust_domain="example.org", path="no-slash")
            ),
            "filter.by_spiffe_id",
        ),
        (
            entry_pb.ListEntriesRequest_Filter(
                by_selectors=pb.SelectorMatch(
                    match=pb_types.SelectorMatchMatchBehavior(
                        pb_types.SelectorMatchMatchBehavior.MATCH_ANY
                    )
                )
            ),
            "filter.by_selectors: empty selector set",
        ),
        (
            entry_pb.ListEntriesRequest_Filter(
                by_selectors=pb.SelectorMatch(selectors=[pb.Selector("", "v")])
            ),
            "filter.by_selectors.selectors[0]",
        ),
        (
            entry_pb.ListEntriesRequest_Filter(
                by_federates_with=pb.FederatesWithMatch(
                    match=pb_types.FederatesWithMatchMatchBehavior(
                        pb_types.FederatesWithMatchMatchBehavior.MATCH_ANY
                    )
                )
            ),
            "filter.by_federates_with: empty trust domain set",
        ),
        (
            entry_pb.ListEntriesRequest_Filter(
                by_federates_with=pb.FederatesWithMatch(trust_domains=["Bad!"])
            ),
            "filter.by_federates_with.trust_domains[0]",
        ),
    ],
    ids=[
        "foreign-spiffe-id",
        "parent-without-domain",
        "path-without-slash",
        "empty-selectors",
        "bad-selector",
        "empty-federates",
        "bad-federated-domain",
    ],
)
async def test_bad_filters_name_the_field(
    entry_service: EntryService, filter: entry_pb.ListEntriesRequest_Filter, expected: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(expected)):
        await _list(entry_service, filter=filter)
    with pytest.raises(InvalidArgumentError, match=re.escape(expected)):
        await _count(entry_service, filter)


async def test_unknown_match_behaviour_is_rejected(entry_service: EntryService) -> None:
    # A peer may send an enum number we do not know: by_selectors (field 3) holding one
    # selector (field 1) and match (field 2) = 9.
    selector = pb.write_Selector(type="t", value="1")
    inner = b"\x0a" + bytes([len(selector)]) + selector + b"\x10\x09"
    parsed = entry_pb.decode_ListEntriesRequest_Filter(b"\x1a" + bytes([len(inner)]) + inner)
    with pytest.raises(InvalidArgumentError, match=r"filter\.by_selectors\.match: unknown match"):
        await _list(entry_service, filter=parsed)


async def test_list_output_mask(entry_service: EntryService, catalog: list[pb.Entry]) -> None:
    entries = await _list(entry_service, output_mask=pb.EntryMask(hint=True))
    assert {(e.hint, e.spiffe_id, len(e.selectors)) for e in entries} == {
        ("front", None, 0),
        ("", None, 0),
    }
    assert {e.id for e in entries} == {e.id for e in catalog}


async def test_paging_visits_every_entry_once(entry_service: EntryService) -> None:
    created = await create_entries(
        entry_service, *(wire_entry(f"/p{number}") for number in range(53))
    )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = (
            await entry_service.list_entries(
                entry_pb.ListEntriesRequest(page_size=7, page_token=token)
            )
        ).decode()
        pages += 1
        assert len(response.entries) <= 7
        seen += [entry.id for entry in response.entries]
        token = response.next_page_token
        if not token:
            break
    assert pages == 8
    assert seen == [entry.id for entry in created]
    # page_size 0: the server chooses, here everything at once.
    everything = (await entry_service.list_entries(entry_pb.ListEntriesRequest())).decode()
    assert [entry.id for entry in everything.entries] == seen
    assert everything.next_page_token == ""


async def test_paging_input_errors(entry_service: EntryService) -> None:
    with pytest.raises(InvalidArgumentError, match="page_size -1"):
        await _list(entry_service, page_size=-1)
    with pytest.raises(InvalidArgumentError, match="invalid page_token"):
        await _list(entry_service, page_size=5, page_token="not-a-token")


async def test_list_pages_never_exceed_the_response_limit(
    server_context: ServerContext,
) -> None:
    limit = 3000
    service = EntryService(server_context, max_response_bytes=limit)
    created = await create_entries(
        service,
        *(
            wire_entry(f"/big{number}", selectors=[("k8s", f"{number}:" + "v" * 200)])
            for number in range(40)
        ),
    )
    for page_size in (0, 25):
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            prebuilt = await service.list_entries(
                entry_pb.ListEntriesRequest(page_size=page_size, page_token=token)
            )
            assert len(bytes(prebuilt)) <= limit
            response = prebuilt.decode()
            assert response.entries
            pages += 1
            seen += [entry.id for entry in response.entries]
            token = response.next_page_token
            if not token:
                break
        assert seen == [entry.id for entry in created]
        assert pages > 3


async def test_an_entry_larger_than_the_limit_cannot_be_listed(
    server_context: ServerContext,
) -> None:
    service = EntryService(server_context, max_response_bytes=500)
    await create_entries(service, wire_entry("/huge", selectors=[("k8s", "v" * 600)]))
    with pytest.raises(GRPCError) as raised:
        await _list(service)
    assert raised.value.status is Status.RESOURCE_EXHAUSTED
    assert "500-byte response limit" in str(raised.value.message)
    assert framed_entry_size(600) > 500
