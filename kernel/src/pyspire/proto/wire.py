"""The protobuf wire format by hand, for the few hot messages betterproto handles slowly.

Writing: :func:`encode_varint` and :func:`length_delimited`, from which the prebuilt replies are
assembled. Reading: the rest of this module.

The generic decoder costs tens to hundreds of microseconds per message; a reader written for one
message type walks its bytes in a few. The readers of such types (a batch of CSRs on the server,
a batch of SVIDs on the agent) share these primitives, so they agree on what is malformed.

Every function reads ``data[position:end]``, where ``end`` is the end of the message being read
(not necessarily of ``data``), and returns the position after what it read. None reads past
``end``: a value that would is a :class:`WireError`, as are a varint longer than ten bytes or
wider than 64 bits, field number 0 and the group wire types (3 and 4) — exactly the inputs the
betterproto runtime refuses. Unknown fields of the four other wire types are skipped, as proto3
requires.
"""

from __future__ import annotations

__all__ = [
    "FIXED32",
    "FIXED64",
    "LENGTH_DELIMITED",
    "VARINT",
    "WireError",
    "encode_varint",
    "int32_of",
    "int64_of",
    "length_delimited",
    "read_length_delimited",
    "read_tag",
    "read_varint",
    "skip_field",
]

VARINT = 0
"""Wire type of int32, int64, uint*, sint*, bool and enum values."""

FIXED64 = 1
"""Wire type of fixed64, sfixed64 and double values."""

LENGTH_DELIMITED = 2
"""Wire type of strings, bytes, embedded messages and packed repeated scalars."""

FIXED32 = 5
"""Wire type of fixed32, sfixed32 and float values."""


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message; the message says what is wrong."""


def read_varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    """The unsigned varint at ``position`` and the position after it.

    At most ten bytes and 64 bits: a longer or wider varint is a :class:`WireError`.
    """
    result = 0
    shift = 0
    while position < end:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if shift == 63 and byte > 1:
                raise WireError("varint overflows 64 bits")
            return result, position
        shift += 7
        if shift > 63:
            raise WireError("varint is longer than 10 bytes")
    raise WireError("truncated varint")


def read_tag(data: bytes, position: int, end: int) -> tuple[int, int, int]:
    """The field number and wire type of the tag at ``position`` (before ``end``), and the
    position after it.

    Field number 0 is a :class:`WireError`; the wire type is not checked here (see
    :func:`skip_field`), so a reader can recognize its own fields first.
    """
    tag = data[position]
    if tag < 0x80:
        position += 1
    else:
        tag, position = read_varint(data, position, end)
    if tag < 8:
        raise WireError("field number 0")
    return tag >> 3, tag & 7, position


def read_length_delimited(data: bytes, position: int, end: int) -> tuple[int, int]:
    """The start and stop of the length-delimited value whose length is at ``position``.

    The value is ``data[start:stop]``; the next field starts at ``stop``.
    """
    length, position = read_varint(data, position, end)
    stop = position + length
    if stop > end:
        raise WireError("field runs past the end of its message")
    return position, stop


def skip_field(data: bytes, position: int, end: int, wire_type: int) -> int:
    """The position after the value (at ``position``) of a field this reader does not know."""
    if wire_type == VARINT:
        _, position = read_varint(data, position, end)
        return position
    if wire_type == FIXED64:
        position += 8
    elif wire_type == LENGTH_DELIMITED:
        _, position = read_length_delimited(data, position, end)
    elif wire_type == FIXED32:
        position += 4
    else:
        raise WireError(f"unsupported wire type {wire_type}")
    if position > end:
        raise WireError("field runs past the end of its message")
    return position


def int32_of(value: int) -> int:
    """An ``int32`` field's value from its varint (the low 32 bits, two's complement)."""
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


def int64_of(value: int) -> int:
    """An ``int64`` field's value from its varint (two's complement)."""
    return value - 0x10000000000000000 if value & 0x8000000000000000 else value


_UINT64 = 1 << 64


def encode_varint(value: int) -> bytes:
    """The protobuf varint encoding of ``value``; negative numbers as 64-bit two's complement
    (ten bytes), as ``int64`` fields carry them."""
    if value < 0:
        value += _UINT64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` carrying ``payload`` (bytes, a string or an embedded message)."""
    return encode_varint((number << 3) | LENGTH_DELIMITED) + encode_varint(len(payload)) + payload
