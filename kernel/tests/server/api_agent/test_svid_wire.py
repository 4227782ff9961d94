"""BatchNewX509SVID requests are read off the wire by the generated codec, exactly as
betterproto reads them, and served as codec messages."""

from __future__ import annotations

import pytest

from pyspire.proto.gen.codec import spire_api_server_svid_v1 as svid_wire
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.messages import EncodedMessage
from pyspire.server.api.svid import SvidService
from pyspire.server.context import ServerContext
from pyspire_sdk.errors import InvalidArgumentError


def pairs(
    request: svid_pb.BatchNewX509SvidRequest | svid_wire.BatchNewX509SVIDRequest,
) -> list[tuple[str, bytes]]:
    return [(item.entry_id, item.csr) for item in request.params]


def read(data: bytes) -> list[tuple[str, bytes]]:
    return pairs(svid_wire.BatchNewX509SVIDRequest.FromString(data))


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
    assert read(data) == pairs(svid_pb.BatchNewX509SvidRequest().parse(data))
    assert read(data) == [
        ("web", b"\x30" * 300),
        ("", b"csr"),
        ("db-é", b""),
        ("", b""),
    ]


def test_an_empty_request_has_no_items() -> None:
    assert read(b"") == []


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
    assert read(data) == [("new", b"x")]
    assert pairs(svid_pb.BatchNewX509SvidRequest().parse(data)) == [("new", b"x")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\x05\x0a\x01", "truncated"),  # params longer than the message
        (b"\x0a\x03\x0a\x05a", "truncated"),  # entry_id longer than its params
        (b"\x0a", "truncated"),
        (b"\x0a\x80", "truncated"),
        (b"\x08" + b"\xff" * 9 + b"\x7f", "overflows 64 bits"),
        (b"\x0b", "not ended"),
        (b"\x00\x00", "field number 0"),
        (b"\x0a\x03\x0a\x01\xff", "not valid UTF-8"),
        (b"\x11\x00", "truncated"),  # a 64-bit field cut short
    ],
)
def test_malformed_requests_are_invalid_arguments(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"^malformed .*{reason}"):
        read(data)


def test_the_batch_method_is_served_with_the_codec(context: ServerContext) -> None:
    mapping = SvidService(context).__mapping__()
    handler = mapping["/spire.api.server.svid.v1.SVID/BatchNewX509SVID"]
    assert handler.request_type is svid_wire.BatchNewX509SVIDRequest
    assert handler.reply_type is EncodedMessage
    assert len(mapping) == len(svid_pb.SvidBase().__mapping__())
