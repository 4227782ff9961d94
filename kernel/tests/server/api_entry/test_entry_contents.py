"""What an entry may hold: wire values outside what a field can mean, contents beyond the limits
of :mod:`pyspire_sdk.limits` and chosen IDs outside SPIRE's alphabet each fail their own batch
item with INVALID_ARGUMENT naming the field; the other items of the batch are written as if it
were not there."""

from __future__ import annotations

import pytest
from grpclib.const import Status

from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_pb
from pyspire.proto.gen.codec import spire_api_types as pb
from pyspire.server.api.entry import EntryService

from .conftest import create_entries, wire_entry

INVALID = Status.INVALID_ARGUMENT.value
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

OUT_OF_RANGE = [
    pytest.param({"expires_at": 99_999_999_999_999}, "expires_at", id="expires-far-future"),
    pytest.param({"expires_at": INT64_MAX}, "expires_at", id="expires-int64-max"),
    pytest.param({"expires_at": INT64_MIN}, "expires_at", id="expires-int64-min"),
    pytest.param({"expires_at": -1}, "expires_at", id="expires-before-epoch"),
    pytest.param({"x509_svid_ttl": INT32_MIN}, "x509_svid_ttl", id="x509-ttl-int32-min"),
    pytest.param({"jwt_svid_ttl": INT32_MIN}, "jwt_svid_ttl", id="jwt-ttl-int32-min"),
]


@pytest.mark.parametrize(("fields", "field"), OUT_OF_RANGE)
async def test_create_refuses_the_item_and_creates_the_rest(
    entry_service: EntryService, fields: dict[str, int], field: str
) -> None:
    response = await entry_service.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(
            entries=[wire_entry("/before"), wire_entry("/bad", **fields), wire_entry("/after")]
        )
    )
    statuses = [(result.status.code, result.status.message) for result in response.decode().results]
    assert [code for code, _ in statuses] == [0, INVALID, 0], statuses
    assert field in statuses[1][1]
    listed = await entry_service.list_entries(entry_pb.ListEntriesRequest())
    assert {entry.spiffe_id.path for entry in listed.decode().entries} == {"/before", "/after"}


@pytest.mark.parametrize(("fields", "field"), OUT_OF_RANGE)
async def test_update_refuses_the_item_and_updates_the_rest(
    entry_service: EntryService, fields: dict[str, int], field: str
) -> None:
    stored = await create_entries(entry_service, wire_entry("/a"), wire_entry("/b"))
    mask = pb.EntryMask(hint=True, **dict.fromkeys(fields, True))
    response = await entry_service.batch_update_entry(
        entry_pb.BatchUpdateEntryRequest(
            entries=[
                pb.Entry(id=stored[0].id, hint="bad", **fields),
                pb.Entry(id=stored[1].id, hint="changed"),
            ],
            input_mask=mask,
        )
    )
    statuses = [(result.status.code, result.status.message) for result in response.decode().results]
    assert [code for code, _ in statuses] == [INVALID, 0], statuses
    assert field in statuses[0][1]
    listed = await entry_service.list_entries(entry_pb.ListEntriesRequest())
    hints = {entry.spiffe_id.path: entry.hint for entry in listed.decode().entries}
    assert hints == {"/a": "", "/b": "changed"}


async def test_read_only_fields_at_their_limits_are_ignored(entry_service: EntryService) -> None:
    """``revision_number`` and ``created_at`` belong to the server: any value is ignored."""
    [created] = await create_entries(
        entry_service, wire_entry("/w", revision_number=INT64_MAX, created_at=INT64_MIN)
    )
    assert created.revision_number == 0
    assert created.created_at > 0


CONTENTS = [
    pytest.param(
        {"selectors": [pb.Selector(type="unix", value="v" * (1024 * 1024))]},
        "selectors[0] value is 1048576 bytes",
        id="one-mebibyte-selector-value",
    ),
    pytest.param(
        {"selectors": [pb.Selector(type="unix", value=f"uid:{n}") for n in range(10_000)]},
        "selectors has 10000 items",
        id="ten-thousand-selectors",
    ),
    pytest.param(
        {"selectors": [pb.Selector(type="unix", value="uid:0\nEntry ID : forged")]},
        "selectors[0] value holds a control character (U+000A)",
        id="newline-in-selector-value",
    ),
    pytest.param(
        {"selectors": [pb.Selector(type="unix", value="uid:\x01")]},
        "selectors[0] value holds a control character (U+0001)",
        id="c0-in-selector-value",
    ),
    pytest.param({"hint": "a\x1b[2Jb"}, "hint holds a control character", id="escape-in-hint"),
    pytest.param(
        {"dns_names": [f"n{n}.example.org" for n in range(1000)]},
        "dns_names has 1000 items",
        id="a-thousand-dns-names",
    ),
    pytest.param({"id": "../../etc/passwd"}, "id '../../etc/passwd'", id="path-as-id"),
    pytest.param({"id": ".."}, "id '..' is not a name", id="dot-dot-id"),
]


@pytest.mark.parametrize(("fields", "reason"), CONTENTS)
async def test_create_refuses_contents_beyond_the_limits(
    entry_service: EntryService, fields: dict[str, object], reason: str
) -> None:
    bad = wire_entry("/bad")
    for name, value in fields.items():
        setattr(bad, name, value)
    response = await entry_service.batch_create_entry(
        entry_pb.BatchCreateEntryRequest(entries=[wire_entry("/before"), bad])
    )
    statuses = [(result.status.code, result.status.message) for result in response.decode().results]
    assert [code for code, _ in statuses] == [0, INVALID], statuses
    assert statuses[1][1].startswith(f"failed to convert entry: {reason}"), statuses[1][1]
    listed = await entry_service.list_entries(entry_pb.ListEntriesRequest())
    assert [entry.spiffe_id.path for entry in listed.decode().entries] == ["/before"]


@pytest.mark.parametrize(
    ("fields", "reason"), [param for param in CONTENTS if "id" not in param.values[0]]
)
async def test_update_refuses_contents_beyond_the_limits(
    entry_service: EntryService, fields: dict[str, object], reason: str
) -> None:
    [stored] = await create_entries(entry_service, wire_entry("/a", hint="kept"))
    change = pb.Entry(id=stored.id, **fields)  # type: ignore[arg-type]
    response = await entry_service.batch_update_entry(
        entry_pb.BatchUpdateEntryRequest(
            entries=[change], input_mask=pb.EntryMask(**dict.fromkeys(fields, True))
        )
    )
    [result] = response.decode().results
    assert result.status.code == INVALID
    assert result.status.message.startswith(f"failed to convert entry: {reason}")
    listed = await entry_service.list_entries(entry_pb.ListEntriesRequest())
    [entry] = listed.decode().entries
    assert (entry.hint, entry.revision_number) == ("kept", 0)


async def test_an_entry_with_a_uuid_or_custom_id_is_created(entry_service: EntryService) -> None:
    created = await create_entries(
        entry_service,
        wire_entry("/uuid", id="0b2f6c1e-5d1e-4c5f-9d1f-6f0c2b8e7a11"),
        wire_entry("/custom", id="Web_Frontend.v2"),
    )
    assert [entry.id for entry in created] == [
        "0b2f6c1e-5d1e-4c5f-9d1f-6f0c2b8e7a11",
        "Web_Frontend.v2",
    ]
