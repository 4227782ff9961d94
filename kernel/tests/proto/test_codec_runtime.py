"""The shared slow paths of the generated codecs: varints both ways and field sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyspire.proto.errors import DecodeError
from pyspire.proto.runtime import field_size, read_varint, uint64_varint


def reference_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


LIMITS = [0, 1, 127, 128, 2**14 - 1, 2**14, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**35 - 1, 2**35]


@pytest.mark.parametrize("value", [*LIMITS, 2**63, 2**64 - 1])
def test_varint_limits(value: int) -> None:
    encoded = uint64_varint(value)
    assert encoded == reference_varint(value)
    assert read_varint(encoded + b"\x01", 0, len(encoded), "f") == (value, len(encoded))


@given(st.integers(0, 2**64 - 1), st.binary(max_size=3))
def test_varints_read_back(value: int, after: bytes) -> None:
    encoded = uint64_varint(value)
    assert encoded == reference_varint(value)
    data = b"\x99" + encoded + after
    assert read_varint(data, 1, 1 + len(encoded), "f") == (value, 1 + len(encoded))


@given(st.integers(128, 2**64 - 1))
def test_a_varint_past_its_end_is_truncated(value: int) -> None:
    encoded = uint64_varint(value)
    for end in range(len(encoded)):
        # The bytes after ``end`` belong to another message: never read as this varint.
        with pytest.raises(DecodeError, match="truncated varint"):
            read_varint(encoded, 0, end, "f")
        with pytest.raises(DecodeError, match="truncated varint"):
            read_varint(encoded[:end], 0, end, "f")


def test_field_sizes() -> None:
    assert field_size(1, 0) == 2
    assert field_size(1, 127) == 129
    assert field_size(1, 128) == 131
    assert field_size(16, 5) == 8
