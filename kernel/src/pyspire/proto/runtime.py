"""What the generated codecs (``pyspire.proto.gen.codec``) share: the slow paths of reading and
writing the protobuf wire format.

The generated readers inline the common case (one-byte tags, lengths and values) and call
these helpers for the rest, so their rules live here once:

* a varint is at most ten bytes and at most 64 bits wide (a tenth byte above 1 overflows, as
  Go's protowire and SPIRE refuse it);
* a tag's field number is between 1 and 2**29 - 1;
* an unknown field of any wire type is skipped: varint, 64- and 32-bit, length-delimited and
  groups (read to their matching end, nested at most :data:`MAX_DEPTH` deep); an end-group tag
  without its start, and the wire types 6 and 7, are errors;
* nothing at or past ``end``, the end of the message being read, is taken as part of it: a
  value that reaches there is an error (readers may look at that byte, never keep it).

Every error is a :class:`~pyspire.proto.errors.DecodeError` naming the message or field.
"""

from __future__ import annotations

__all__ = [
    "MAX_DEPTH",
    "ONE_BYTE_VARINTS",
    "base64_text",
    "check_range",
    "field_size",
    "length_prefixes",
    "read_varint",
    "skip_field",
    "too_deep",
    "truncated",
    "uint64_varint",
    "utf8_error",
]

import base64

from pyspire.proto.errors import DecodeError

MAX_DEPTH = 100
"""How deeply messages and groups may nest on the wire (the limit of Google's runtime)."""

_MAX_FIELD_NUMBER = (1 << 29) - 1


def read_varint(data: bytes, position: int, end: int, field: str) -> tuple[int, int]:
    """The unsigned varint starting at ``position`` (before ``end``) and the position after it.

    Unrolled: the generated readers call this for every value of two bytes or more.
    """
    try:
        byte = data[position]
        result = byte & 0x7F
        if byte < 0x80:
            stop = position + 1
        else:
            byte = data[position + 1]
            result |= (byte & 0x7F) << 7
            if byte < 0x80:
                stop = position + 2
            else:
                byte = data[position + 2]
                result |= (byte & 0x7F) << 14
                if byte < 0x80:
                    stop = position + 3
                else:
                    byte = data[position + 3]
                    result |= (byte & 0x7F) << 21
                    if byte < 0x80:
                        stop = position + 4
                    else:
                        byte = data[position + 4]
                        result |= (byte & 0x7F) << 28
                        if byte < 0x80:  # five bytes: timestamps
                            stop = position + 5
                        else:
                            result, stop = _read_long_varint(data, position + 5, result, field)
    except IndexError:
        raise DecodeError(field, "truncated varint") from None
    if stop > end:
        raise DecodeError(field, "truncated varint")
    return result, stop


def _read_long_varint(data: bytes, position: int, result: int, field: str) -> tuple[int, int]:
    """The rest of a varint whose first five bytes gave ``result``."""
    shift = 35
    while True:
        byte = data[position]
        position += 1
        if shift == 63:
            if byte > 1:
                raise DecodeError(field, "varint overflows 64 bits")
            return result | (byte << 63), position
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def truncated(field: str) -> DecodeError:
    """The error for a value that runs past the end of its message."""
    return DecodeError(field, "truncated: the value runs past the end of its message")


def utf8_error(field: str) -> DecodeError:
    """The error for a string field whose bytes are not UTF-8."""
    return DecodeError(field, "not valid UTF-8")


def too_deep(message: str) -> DecodeError:
    """The error for messages or groups nested deeper than :data:`MAX_DEPTH`."""
    return DecodeError(message, f"nested more than {MAX_DEPTH} levels deep")


def skip_field(data: bytes, position: int, end: int, tag: int, message: str, depth: int) -> int:
    """The position after the value (at ``position``) of a field the reader of ``message`` does
    not know, or knows with another wire type (Google's runtime keeps such a field as unknown)."""
    number = tag >> 3
    if number == 0 or number > _MAX_FIELD_NUMBER:
        raise DecodeError(message, f"invalid field number {number}")
    wire_type = tag & 7
    if wire_type == 0:
        _, position = read_varint(data, position, end, message)
        return position
    if wire_type == 2:
        length, position = read_varint(data, position, end, message)
        position += length
    elif wire_type == 1:
        position += 8
    elif wire_type == 5:
        position += 4
    elif wire_type == 3:
        return _skip_group(data, position, end, number, message, depth + 1)
    elif wire_type == 4:
        raise DecodeError(message, f"end of group {number} that was not started")
    else:
        raise DecodeError(message, f"invalid wire type {wire_type}")
    if position > end:
        raise truncated(message)
    return position


def _skip_group(data: bytes, position: int, end: int, number: int, message: str, depth: int) -> int:
    if depth > MAX_DEPTH:
        raise too_deep(message)
    while position < end:
        tag, position = read_varint(data, position, end, message)
        if tag & 7 == 4:
            if tag >> 3 != number:
                raise DecodeError(message, f"group {number} ended by the end of group {tag >> 3}")
            return position
        position = skip_field(data, position, end, tag, message, depth)
    raise DecodeError(message, f"group {number} is not ended")


def uint64_varint(value: int) -> bytes:
    """The varint of ``0 <= value < 2**64`` (callers pass negative numbers as their 64-bit two's
    complement)."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, (value >> 7 & 0x7F) | 0x80, value >> 14))
    if value < 0x800000000:  # up to five bytes: every timestamp until the year 3058
        if value < 0x10000000:
            return bytes(
                (
                    (value & 0x7F) | 0x80,
                    (value >> 7 & 0x7F) | 0x80,
                    (value >> 14 & 0x7F) | 0x80,
                    value >> 21,
                )
            )
        return bytes(
            (
                (value & 0x7F) | 0x80,
                (value >> 7 & 0x7F) | 0x80,
                (value >> 14 & 0x7F) | 0x80,
                (value >> 21 & 0x7F) | 0x80,
                value >> 28,
            )
        )
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE = tuple(bytes((value,)) for value in range(0x80))
ONE_BYTE_VARINTS = _ONE_BYTE
"""The varints of 0 to 127, looked up by the generated writers."""


def length_prefixes(tag: bytes) -> tuple[bytes, ...]:
    """``tag`` followed by each one-byte length 0 to 127: the start of a short length-delimited
    field, looked up instead of built."""
    return tuple(tag + length for length in _ONE_BYTE)


def check_range(value: int, low: int, high: int, field: str) -> None:
    """Refuse to encode an integer its field cannot hold (it would arrive as another number)."""
    if not low <= value <= high:
        raise ValueError(f"{field}: {value} is out of range [{low}, {high}]")


def field_size(number: int, payload_size: int) -> int:
    """Bytes a length-delimited field takes on the wire: tag, varint length and payload (to
    keep a response under a size limit without encoding it twice)."""
    return len(uint64_varint(number << 3)) + len(uint64_varint(payload_size)) + payload_size


def base64_text(data: bytes) -> str:
    """``data`` in standard base64 with padding, as protobuf's JSON mapping writes bytes."""
    return base64.b64encode(data).decode("ascii")
