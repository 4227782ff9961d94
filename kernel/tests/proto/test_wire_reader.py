"""The shared protobuf wire reader: varints, tags, length-delimited values, skipping unknown
fields, and refusing what betterproto's runtime refuses."""

from __future__ import annotations

import pytest

from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.wire import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    VARINT,
    WireError,
    int32_of,
    int64_of,
    read_length_delimited,
    read_tag,
    read_varint,
    skip_field,
)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x00", 0),
        (b"\x01", 1),
        (b"\x7f", 127),
        (b"\x80\x01", 128),
        (b"\x96\x01", 150),
        (b"\x80\x80\x00", 0),  # padded: still accepted, as protobuf runtimes do
        (b"\xff" * 9 + b"\x01", (1 << 64) - 1),
    ],
)
def test_varints(data: bytes, value: int) -> None:
    assert read_varint(data + b"rest", 0, len(data) + 4) == (value, len(data))


def test_a_varint_is_read_from_its_position_and_not_past_the_end() -> None:
    data = b"ab\x96\x01cd"
    assert read_varint(data, 2, len(data)) == (150, 4)
    with pytest.raises(WireError, match=r"^truncated varint$"):
        read_varint(data, 2, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated varint"),
        (b"\x80", "truncated varint"),
        (b"\xff" * 10 + b"\x01", "varint is longer than 10 bytes"),
        (b"\xff" * 9 + b"\x02", "varint overflows 64 bits"),
        (b"\x80" * 9 + b"\x7f", "varint overflows 64 bits"),
    ],
)
def test_bad_varints(data: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=f"^{reason}$"):
        read_varint(data, 0, len(data))


def test_tags() -> None:
    assert read_tag(b"\x0a", 0, 1) == (1, LENGTH_DELIMITED, 1)
    assert read_tag(b"\x08", 0, 1) == (1, VARINT, 1)
    assert read_tag(b"\xc0\x3e", 0, 2) == (1000, VARINT, 2)
    assert read_tag(b"x\x15", 1, 2) == (2, FIXED32, 2)
    # The wire type is the reader's to judge: a group tag is returned, not refused.
    assert read_tag(b"\x0b", 0, 1) == (1, 3, 1)
    with pytest.raises(WireError, match=r"^field number 0$"):
        read_tag(b"\x02", 0, 1)
    with pytest.raises(WireError, match=r"^field number 0$"):
        read_tag(b"\x80\x00", 0, 2)
    with pytest.raises(WireError, match=r"^truncated varint$"):
        read_tag(b"\x80", 0, 1)


def test_length_delimited_values() -> None:
    data = b"\x0a\x03abc\x12\x00"
    assert read_length_delimited(data, 1, len(data)) == (2, 5)
    assert read_length_delimited(data, 6, len(data)) == (7, 7)
    with pytest.raises(WireError, match=r"^field runs past the end of its message$"):
        read_length_delimited(data, 1, 4)  # the enclosing message ends inside the value
    with pytest.raises(WireError, match=r"^truncated varint$"):
        read_length_delimited(b"\x80", 0, 1)


@pytest.mark.parametrize(
    ("wire_type", "value"),
    [
        (VARINT, b"\x96\x01"),
        (VARINT, b"\xff" * 9 + b"\x01"),
        (FIXED64, bytes(range(8))),
        (LENGTH_DELIMITED, b"\x03abc"),
        (LENGTH_DELIMITED, b"\x00"),
        (FIXED32, bytes(4)),
    ],
)
def test_skipping_each_wire_type(wire_type: int, value: bytes) -> None:
    data = b"#" + value + b"next"
    assert skip_field(data, 1, len(data), wire_type) == 1 + len(value)
    # Cut one byte short of the value, the field runs past the end of its message.
    with pytest.raises(WireError, match=r"^(field runs past the end|truncated varint)"):
        skip_field(data, 1, len(value), wire_type)


@pytest.mark.parametrize("wire_type", [3, 4, 6, 7])
def test_groups_and_undefined_wire_types_cannot_be_skipped(wire_type: int) -> None:
    with pytest.raises(WireError, match=f"^unsupported wire type {wire_type}$"):
        skip_field(b"\x00" * 8, 0, 8, wire_type)


@pytest.mark.parametrize(
    ("value", "int32", "int64"),
    [
        (0, 0, 0),
        (5, 5, 5),
        (0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF),
        (0xFFFFFFFF, -1, 0xFFFFFFFF),
        ((1 << 64) - 1, -1, -1),
        ((1 << 64) - 2**31, -(2**31), -(2**31)),
        (1 << 63, 0, -(1 << 63)),
    ],
)
def test_signed_values(value: int, int32: int, int64: int) -> None:
    assert int32_of(value) == int32
    assert int64_of(value) == int64


def read_status(data: bytes) -> tuple[int, str]:
    """A ``Status`` read with the primitives, as a hand reader would."""
    code, message = 0, ""
    position, end = 0, len(data)
    while position < end:
        number, wire_type, position = read_tag(data, position, end)
        if number == 1 and wire_type == VARINT:
            value, position = read_varint(data, position, end)
            code = int32_of(value)
        elif number == 2 and wire_type == LENGTH_DELIMITED:
            start, position = read_length_delimited(data, position, end)
            message = data[start:position].decode()
        else:
            position = skip_field(data, position, end, wire_type)
    return code, message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(pb.Status(code=5, message="gone")),
        bytes(pb.Status(code=-3)),
        b"\x08\xff\xff\xff\xff\x0f",  # int32 -1 in five bytes
        b"\x18\x01\x21" + bytes(8) + b"\x2d" + bytes(4) + b"\x32\x01z\x08\x07",  # unknowns
        b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00",
    ],
)
def test_a_reader_built_on_the_primitives_reads_what_betterproto_reads(data: bytes) -> None:
    message = pb.Status().parse(data)
    assert read_status(data) == (message.code, message.message)


@pytest.mark.parametrize(
    "data",
    [
        b"\x08",
        b"\x08" + b"\xff" * 9 + b"\x7f",
        b"\x08" + b"\xff" * 11,
        b"\x00\x00",
        b"\x1b\x1c",
        b"\x12\x05ab",
        b"\x19" + bytes(7),
        b"\x1d" + bytes(3),
    ],
)
def test_the_primitives_refuse_what_betterproto_refuses(data: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017,PT011 - the runtime raises a bare RuntimeError
        pb.Status().parse(data)
    with pytest.raises(WireError):
        read_status(data)
