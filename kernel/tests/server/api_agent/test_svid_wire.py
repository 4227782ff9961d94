"""BatchNewX509SVID requests read off the wire decode exactly as betterproto decodes them."""

from __future__ import annotations

import pytest

from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.server.api.svid import BatchRequestWire, SvidService
from pyspire.server.context import ServerContext
from pyspire_sdk.errors import InvalidArgumentError


def pairs(request: svid_pb.BatchNewX509SvidRequest) -> list[tuple[str, bytes]]:
    return [(item.entry_id, item.csr) for item in request.params]


def test_items_match_betterproto() -> None:
    request = svid_pb.BatchNewX509SvidRequest(
        params=[
            svid_pb.NewX509SvidParams(entry_id="web", csr=b"\x30" * 300),
            svid_pb.NewX509SvidParams(entry_id="", csr=b"csr"),
            svid_pb.NewX509SvidParams(entry_id="db-é", csr=b""),
            svid_pb.NewX509SvidParams(),
        ]
    )
    data = bytes(request)
    assert list(BatchRequestWire.FromString(data).items) == pairs(
        svid_pb.BatchNewX509SvidRequest().parse(data)
    )
    assert list(BatchRequestWire.FromString(data).items) == [
        ("web", b"\x30" * 300),
        ("", b"csr"),
        ("db-é", b""),
        ("", b""),
    ]


def test_an_empty_request_has_no_items() -> None:
    assert list(BatchRequestWire.FromString(b"").items) == []


def test_unknown_fields_are_skipped_and_the_last_value_wins() -> None:
    params = (
        b"\x0a\x03old"  # entry_id = "old"
        + b"\x18\x96\x01"  # field 3, varint 150 (unknown)
        + b"\x21"
        + bytes(8)  # field 4, 64-bit (unknown)
        + b"\x2d"
        + bytes(4)  # field 5, 32-bit (unknown)
        + b"\x32\x02zz"  # field 6, length-delimited (unknown)
        + b"\x0a\x03new"  # entry_id again: the last value wins
        + b"\x12\x01x"  # csr
    )
    data = b"\x0a" + bytes([len(params)]) + params + b"\x10\x01"  # unknown outer field 2
    assert list(BatchRequestWire.FromString(data).items) == [("new", b"x")]
    assert pairs(svid_pb.BatchNewX509SvidRequest().parse(data)) == [("new", b"x")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\x05\x0a\x01", "past the end"),  # params longer than the message
        (b"\x0a\x03\x0a\x05a", "past the end"),  # entry_id longer than its params
        (b"\x0a", "truncated varint"),
        (b"\x0a\x80", "truncated varint"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x00\x00", "field number 0"),
        (b"\x0a\x03\x0a\x01\xff", "not valid UTF-8"),
        (b"\x11\x00", "past the end"),  # a 64-bit field cut short
    ],
)
def test_malformed_requests_are_invalid_arguments(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"^malformed request: .*{reason}"):
        BatchRequestWire.FromString(data)


def test_the_batch_method_is_served_with_the_wire_decoder(context: ServerContext) -> None:
    mapping = SvidService(context).__mapping__()
    handler = mapping["/spire.api.server.svid.v1.SVID/BatchNewX509SVID"]
    assert handler.request_type is BatchRequestWire
    assert handler.reply_type is svid_pb.BatchNewX509SvidResponse
    assert len(mapping) == len(svid_pb.SvidBase().__mapping__())
