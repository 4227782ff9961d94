"""The generated decoders on hostile input: every malformed message is a DecodeError (an
InvalidArgumentError) naming the message or field, never an IndexError or UnicodeDecodeError;
what proto3 allows (unknown fields, any order, repeated singular fields) is read as proto3 says.
"""

from __future__ import annotations

import pytest

from pyspire.proto.errors import DecodeError
from pyspire.proto.gen.codec import google_protobuf as struct_codec
from pyspire.proto.gen.codec import spire_api_types as types
from pyspire.proto.runtime import MAX_DEPTH
from pyspire_sdk.errors import InvalidArgumentError


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def full_entry() -> types.Entry:
    return types.Entry(
        id="e1",
        spiffe_id=types.SPIFFEID("example.org", "/w"),
        parent_id=types.SPIFFEID("example.org", "/spire/agent/a"),
        selectors=[types.Selector("unix", "uid:0"), types.Selector("k8s", "ns:x")],
        x509_svid_ttl=-5,
        federates_with=["b.org"],
        admin=True,
        expires_at=-(2**63),
        dns_names=["x", "y"],
        revision_number=2**63 - 1,
        hint="h",
        created_at=1_700_000_000,
        additional_attributes=types.AdditionalAttributes(jwt_svid_include_jti=True),
    )


def test_decode_errors_are_invalid_argument_errors() -> None:
    assert issubclass(DecodeError, InvalidArgumentError)


def test_invalid_utf8_names_the_field() -> None:
    with pytest.raises(DecodeError) as raised:
        types.decode_Entry(field(14, b"\xff\xfe"))
    assert raised.value.field == "spire.api.types.Entry.hint"
    assert raised.value.reason == "not valid UTF-8"
    with pytest.raises(DecodeError) as raised:
        types.decode_Entry(field(2, field(2, b"/\xed\xa0\x80")))  # an encoded surrogate
    assert raised.value.field == "spire.api.types.SPIFFEID.path"


def test_every_truncation_is_a_decode_error_or_a_shorter_message() -> None:
    data = types.encode_Entry(full_entry())
    for cut in range(len(data)):
        reason = "read"
        try:
            types.decode_Entry(data[:cut])
        except DecodeError as error:
            reason = error.reason
        assert reason.startswith(("read", "truncated", "not valid UTF-8")), reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x28" + b"\xff" * 9 + b"\x02", "varint overflows 64 bits"),
        (b"\x28" + b"\xff" * 10 + b"\x01", "varint overflows 64 bits"),
        (b"\x28\xff", "truncated: the value runs past the end of its message"),
        (b"\x28\xff\xff", "truncated varint"),
        (b"\x0a\x05abc", "truncated: the value runs past the end of its message"),
        (b"\x0a\xff\xff\xff\xff\x0fabc", "truncated: the value runs past the end of its message"),
        (b"\x00\x01", "invalid field number 0"),
        (b"\x0e", "invalid wire type 6"),
        (b"\x0f", "invalid wire type 7"),
        (b"\x8c\x01", "end of group 17 that was not started"),
        (b"\x8b\x01\x08\x01", "group 17 is not ended"),
        (b"\x8b\x01\x94\x01", "group 17 ended by the end of group 18"),
        (b"\x81\x01\x00\x00", "truncated: the value runs past the end of its message"),
        (b"\x85\x01\x00", "truncated: the value runs past the end of its message"),
        (b"\x28", "truncated: the value runs past the end of its message"),
        (b"\x0a", "truncated: the value runs past the end of its message"),
        (b"\xf8\xff\xff\xff\x7f\x00", "invalid field number 4294967295"),
    ],
)
def test_malformed_messages(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as raised:
        types.decode_Entry(data)
    assert raised.value.reason == reason


def test_a_sub_message_cannot_reach_into_its_parent() -> None:
    # SPIFFEID of 2 bytes whose inner string claims 5: the parent's bytes are not read.
    data = field(2, b"\x0a\x05") + b"abcde"
    with pytest.raises(DecodeError) as raised:
        types.decode_Entry(data)
    assert raised.value.field == "spire.api.types.SPIFFEID.trust_domain"
    # A varint value cut short at the end of the sub-message.
    with pytest.raises(DecodeError):
        types.decode_Entry(field(16, b"\x08\xff") + b"\x01")


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    unknown = (
        varint(100 << 3)
        + varint(2**64 - 1)
        + varint(101 << 3 | 1)
        + b"\x01" * 8
        + field(102, b"anything")
        + varint(103 << 3 | 3)
        + varint(1 << 3)
        + b"\x05"
        + field(2, b"x")
        + varint(103 << 3 | 4)
        + varint(104 << 3 | 3)
        + varint(105 << 3 | 3)
        + varint(105 << 3 | 4)
        + varint(104 << 3 | 4)
        + varint(106 << 3 | 5)
        + b"\x01" * 4
    )
    data = unknown + field(1, b"e1") + unknown + field(14, b"h") + unknown
    assert types.decode_Entry(data) == types.Entry(id="e1", hint="h")


def test_a_known_field_with_another_wire_type_is_skipped_as_unknown() -> None:
    # Google's runtime keeps it as an unknown field, and so reads the default.
    assert types.decode_Entry(b"\x08\x05" + varint(5 << 3 | 2) + b"\x00") == types.Entry()


def test_fields_out_of_order_and_repeated() -> None:
    entry = full_entry()
    forward = types.encode_Entry(entry)
    parts = [
        field(14, b"first"),
        field(4, types.encode_Selector(types.Selector("a", "1"))),
        field(2, field(1, b"td.org")),
        field(14, b"h2"),  # last one wins
        field(2, field(2, b"/merged")),  # sub-messages merge
        field(4, types.encode_Selector(types.Selector("b", "2"))),  # repeated: appended
        varint(5 << 3) + varint(7),
        varint(5 << 3) + varint(9),
    ]
    decoded = types.decode_Entry(forward + b"".join(reversed(parts)))
    assert decoded.hint == "first"
    assert decoded.spiffe_id == types.SPIFFEID("td.org", "/merged")
    assert decoded.x509_svid_ttl == 7
    assert decoded.selectors == [
        *entry.selectors,
        types.Selector("b", "2"),
        types.Selector("a", "1"),
    ]
    decoded = types.decode_Entry(b"".join(parts))
    assert decoded.hint == "h2"
    assert decoded.spiffe_id == types.SPIFFEID("td.org", "/merged")
    assert decoded.x509_svid_ttl == 9


def test_nesting_is_bounded() -> None:
    value = b""
    for _ in range(MAX_DEPTH + 5):
        value = struct_codec.write_Value(list_value=struct_codec.write_ListValue(values=[value]))
    with pytest.raises(DecodeError) as raised:
        struct_codec.decode_Value(value)
    assert "nested more than" in raised.value.reason
    group = b""
    for number in range(1, MAX_DEPTH + 5):
        group = varint(number << 3 | 3) + group + varint(number << 3 | 4)
    with pytest.raises(DecodeError):
        types.decode_Entry(group)


def test_any_buffer_type_is_read() -> None:
    data = types.encode_Entry(full_entry())
    assert types.decode_Entry(bytearray(data)) == full_entry()
    assert types.decode_Entry(memoryview(data)) == full_entry()
    assert types.Entry.FromString(data).SerializeToString() == data


def test_out_of_range_integers_are_not_encoded() -> None:
    with pytest.raises(ValueError, match=r"spire\.api\.types\.Entry\.x509_svid_ttl"):
        types.write_Entry(x509_svid_ttl=2**31)
    with pytest.raises(ValueError, match="sequence_number"):
        types.write_Bundle(sequence_number=-1)
