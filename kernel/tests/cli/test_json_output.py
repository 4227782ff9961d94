"""Streamed JSON and the generated Entry renderings produce exactly what the generic mapping
does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyspire.cli.admin_client import message_json, print_json
from pyspire.cli.json_stream import JsonListWriter, dumps_indented
from pyspire.cli.printable import printable_lines
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_wire
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb


def entry_json(entry: pb.Entry) -> Any:
    """The CLI's rendering of an entry: the codec's, of the same bytes."""
    return types_wire.json_Entry(types_wire.decode_Entry(bytes(entry)))


FULL = pb.Entry(
    id="entry-1",
    spiffe_id=pb.Spiffeid(trust_domain="example.org", path="/web"),
    parent_id=pb.Spiffeid(trust_domain="example.org", path="/spire/agent/x"),
    selectors=[pb.Selector(type="unix", value="uid:1"), pb.Selector(type="k8s", value="ns:a")],
    x509_svid_ttl=3600,
    federates_with=["partner.org"],
    admin=True,
    downstream=True,
    expires_at=4102444800,
    dns_names=["web.example.org", "w.example.org"],
    revision_number=7,
    store_svid=True,
    jwt_svid_ttl=300,
    hint="web \x1b hint",
    created_at=1700000000,
    additional_attributes=pb.AdditionalAttributes(jwt_svid_include_jti=True),
)
ENTRIES = [FULL, pb.Entry(), pb.Entry(id="only-id", hint="ünïcödé")]


@pytest.mark.parametrize("entry", ENTRIES)
def test_entry_json_is_the_generic_mapping(entry: pb.Entry) -> None:
    [expected] = message_json(entry_pb.ListEntriesResponse(entries=[entry]))["entries"]
    assert entry_json(entry) == expected


def test_batch_results_are_the_generic_mapping() -> None:
    results = [
        entry_pb.BatchCreateEntryResponseResult(status=pb.Status(code=0, message="OK"), entry=FULL),
        entry_pb.BatchCreateEntryResponseResult(status=pb.Status(code=6, message="exists")),
    ]
    expected = message_json(entry_pb.BatchCreateEntryResponse(results=results))["results"]
    created = entry_wire.decode_BatchCreateEntryResponse(
        bytes(entry_pb.BatchCreateEntryResponse(results=results))
    )
    assert [entry_wire.json_BatchCreateEntryResponse_Result(r) for r in created.results] == expected
    update = entry_pb.BatchUpdateEntryResponseResult(status=pb.Status(code=5), entry=FULL)
    [updated] = message_json(entry_pb.BatchUpdateEntryResponse(results=[update]))["results"]
    [read] = entry_wire.decode_BatchUpdateEntryResponse(
        bytes(entry_pb.BatchUpdateEntryResponse(results=[update]))
    ).results
    assert entry_wire.json_BatchUpdateEntryResponse_Result(read) == updated


@pytest.mark.parametrize("count", [0, 1, 3])
@pytest.mark.parametrize("tail", [{}, {"next_page_token": ""}, {"more": {"a": [1, 2]}}])
def test_the_streamed_document_is_byte_for_byte_the_whole_one(
    count: int, tail: dict[str, Any]
) -> None:
    items = [entry_json(entry) for entry in ENTRIES[:count]]
    whole: list[str] = []
    print_json(whole.append, {"entries": items, **tail})
    streamed: list[str] = []
    with JsonListWriter(streamed.append, "entries", tail) as writer:
        for item in items:
            writer.add(item)
    assert "\n".join(streamed) == "\n".join(whole)
    assert json.loads("\n".join(streamed)) == {"entries": items, **tail}
    paged: list[str] = []
    with JsonListWriter(paged.append, "entries", tail) as writer:
        writer.extend(items[:2])
        writer.extend([])
        writer.extend(items[2:])
    assert "\n".join(paged) == "\n".join(whole)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(document=_JSON, pad=st.sampled_from(["", "  ", "    "]))
def test_the_fast_indented_dump_is_jsons(document: Any, pad: str) -> None:
    expected = json.dumps(document, indent=2).replace("\n", "\n" + pad)
    dumped = dumps_indented(document, pad)
    assert dumped == expected
    # What CliContext.out_json writes without the escape pass: nothing to escape.
    assert printable_lines(dumped) == dumped


def test_keys_that_are_not_strings_are_left_to_json() -> None:
    assert dumps_indented({1: [True, None]}) == json.dumps({1: [True, None]}, indent=2)
