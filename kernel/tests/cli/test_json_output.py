"""Streamed JSON and the fast Entry renderer produce exactly what the generic mapping does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pyspire.cli.admin_client import message_json, print_json
from pyspire.cli.entry_json import batch_result_json, entry_json
from pyspire.cli.json_stream import JsonListWriter
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb

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
    assert [batch_result_json(result) for result in results] == expected
    update = entry_pb.BatchUpdateEntryResponseResult(status=pb.Status(code=5), entry=FULL)
    [updated] = message_json(entry_pb.BatchUpdateEntryResponse(results=[update]))["results"]
    assert batch_result_json(update) == updated


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
