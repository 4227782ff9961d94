"""The generated JSON renderings are what the CLI prints today for the same message (the
betterproto rendering of ``pyspire.cli.admin_client.message_json``), and the well-known
``Struct`` is plain JSON as Google's runtime renders it."""

from __future__ import annotations

import importlib
from typing import Any

import betterproto
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from pyspire.cli.admin_client import message_json

from .differential import encoder, google_class, json_function, messages

# Messages the CLI prints, with the betterproto class it prints them from.
PRINTED = {
    "spire.api.types.Entry": ("pyspire.proto.gen.spire.api.types", "Entry"),
    "spire.api.types.Bundle": ("pyspire.proto.gen.spire.api.types", "Bundle"),
    "spire.api.server.entry.v1.ListEntriesResponse": (
        "pyspire.proto.gen.spire.api.server.entry.v1",
        "ListEntriesResponse",
    ),
    "spire.api.server.entry.v1.BatchCreateEntryResponse": (
        "pyspire.proto.gen.spire.api.server.entry.v1",
        "BatchCreateEntryResponse",
    ),
    "spire.api.server.entry.v1.BatchUpdateEntryResponse": (
        "pyspire.proto.gen.spire.api.server.entry.v1",
        "BatchUpdateEntryResponse",
    ),
    "spire.api.server.entry.v1.BatchDeleteEntryResponse": (
        "pyspire.proto.gen.spire.api.server.entry.v1",
        "BatchDeleteEntryResponse",
    ),
    "spire.api.server.entry.v1.CountEntriesResponse": (
        "pyspire.proto.gen.spire.api.server.entry.v1",
        "CountEntriesResponse",
    ),
}

_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("full_name", sorted(PRINTED))
@_SETTINGS
@given(data=st.data())
def test_json_is_what_the_cli_prints(full_name: str, data: st.DataObject) -> None:
    message: Any = data.draw(messages(full_name))
    module, name = PRINTED[full_name]
    betterproto_class: type[betterproto.Message] = getattr(importlib.import_module(module), name)
    expected = message_json(betterproto_class().parse(encoder(full_name)(message)))
    assert json_function(full_name)(message) == expected


@_SETTINGS
@given(data=st.data())
def test_struct_json_is_plain_json(data: st.DataObject) -> None:
    message: Any = data.draw(messages("google.protobuf.Struct"))
    google = google_class("google.protobuf.Struct").FromString(
        encoder("google.protobuf.Struct")(message)
    )
    try:
        expected = json_format.MessageToDict(google)
    except ValueError:  # infinities have no JSON form in Google's runtime
        reject()
    assert json_function("google.protobuf.Struct")(message) == expected
