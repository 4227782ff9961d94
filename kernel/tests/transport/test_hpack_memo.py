"""The memoizing HPACK codec against plain hpack: same bytes out, same headers back, same
tables, same errors, on random header sequences over one connection and over new ones; and it
does remember what repeats, within a connection and across new connections."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hpack import Decoder, Encoder, HeaderTuple, HPACKError, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from pyspire.transport import hpack_memo
from pyspire.transport.hpack_memo import (
    FIRST_BLOCK_BYTES,
    FIRST_BLOCKS,
    MEMO_BLOCKS,
    MemoDecoder,
    MemoEncoder,
)

# Few names and values, so that blocks repeat and fields hit the dynamic table, and long
# enough values that a small table evicts.
NAMES = [b":status", b"content-type", b"grpc-status", b"grpc-message", b"x-a", "x-b"]
VALUES = [b"0", b"200", b"application/grpc", b"ok", b"v" * 40, "w" * 90, b""]


@st.composite
def header(draw: st.DrawFn) -> Any:
    name = draw(st.sampled_from(NAMES))
    value = draw(st.sampled_from(VALUES))
    shape = draw(st.sampled_from(["pair", "triple", "tuple", "never"]))
    if shape == "pair":
        return (name, value)
    if shape == "triple":
        return (name, value, draw(st.booleans()))
    name_bytes = name if isinstance(name, bytes) else name.encode()
    value_bytes = value if isinstance(value, bytes) else value.encode()
    if shape == "tuple":
        return HeaderTuple(name_bytes, value_bytes)
    return NeverIndexedHeaderTuple(name_bytes, value_bytes)


blocks = st.lists(header(), min_size=0, max_size=5)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("encode"), blocks, st.booleans(), st.booleans()),
        st.tuples(st.just("table"), st.sampled_from([0, 64, 150, 256, 4096])),
        st.tuples(st.just("list-limit"), st.sampled_from([20, 200, 65536])),
        st.tuples(st.just("allowed"), st.sampled_from([64, 256, 4096])),
        st.tuples(st.just("connect")),
    ),
    max_size=60,
)


def outcome(decoder: Decoder, block: bytes, raw: bool) -> Any:
    try:
        return ("ok", decoder.decode(block, raw=raw))
    except HPACKError as error:
        return ("error", type(error))


def same_table(plain: Any, memo: Any) -> None:
    assert list(memo.header_table.dynamic_entries) == list(plain.header_table.dynamic_entries)
    assert memo.header_table.maxsize == plain.header_table.maxsize
    assert memo.header_table._current_size == plain.header_table._current_size


@settings(max_examples=400, deadline=None)
@given(steps)
def test_memo_codec_codes_exactly_as_hpack(sequence: list[Any]) -> None:
    plain_encoder, memo_encoder = Encoder(), MemoEncoder()
    plain_decoder, memo_decoder = Decoder(), MemoDecoder()
    for step in sequence:
        if step[0] == "encode":
            _, headers, huffman, raw = step
            block = plain_encoder.encode(list(headers), huffman=huffman)
            assert memo_encoder.encode(list(headers), huffman=huffman) == block
            same_table(plain_encoder, memo_encoder)
            assert memo_encoder.table_size_changes == plain_encoder.table_size_changes
            # Decode twice, as a repeated block is the memo's case.
            for _ in range(2):
                expected = outcome(plain_decoder, block, raw)
                assert outcome(memo_decoder, block, raw) == expected
                same_table(plain_decoder, memo_decoder)
        elif step[0] == "table":
            plain_encoder.header_table_size = memo_encoder.header_table_size = step[1]
        elif step[0] == "list-limit":
            plain_decoder.max_header_list_size = memo_decoder.max_header_list_size = step[1]
        elif step[0] == "connect":
            # A new connection: empty tables, whose first blocks the process may remember.
            plain_encoder, memo_encoder = Encoder(), MemoEncoder()
            plain_decoder, memo_decoder = Decoder(), MemoDecoder()
        else:
            plain_decoder.max_allowed_table_size = step[1]
            memo_decoder.max_allowed_table_size = step[1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=12), max_size=8), st.booleans())
def test_memo_decoder_fails_and_succeeds_as_hpack_on_any_bytes(
    chunks: list[bytes], raw: bool
) -> None:
    plain, memo = Decoder(), MemoDecoder()
    for chunk in chunks + chunks:
        assert outcome(memo, chunk, raw) == outcome(plain, chunk, raw)
        same_table(plain, memo)


RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc+proto")]


def test_a_repeated_block_is_answered_without_hpack(caplog: pytest.LogCaptureFixture) -> None:
    encoder, decoder = MemoEncoder(), MemoDecoder()
    first = encoder.encode(RESPONSE)  # inserts content-type: not remembered
    second = encoder.encode(RESPONSE)  # all indexed now: remembered
    decoder.decode(first, raw=True)
    decoder.decode(second, raw=True)
    with caplog.at_level(logging.DEBUG, logger="hpack"):
        assert encoder.encode(list(RESPONSE)) == second
        assert decoder.decode(second, raw=True) == [HeaderTuple(*field) for field in RESPONSE]
    assert [record for record in caplog.records if record.name.startswith("hpack")] == []


def test_a_table_change_forgets_what_was_remembered() -> None:
    encoder = MemoEncoder()
    encoder.encode(RESPONSE)
    remembered = encoder.encode(RESPONSE)
    encoder.encode([(b"x-other", b"1")])  # an insertion shifts every dynamic index
    again = encoder.encode(RESPONSE)
    assert again != remembered
    assert again == _plain_encoding([RESPONSE, RESPONSE, [(b"x-other", b"1")], RESPONSE])


def _plain_encoding(sequence: list[list[tuple[bytes, bytes]]]) -> bytes:
    encoder = Encoder()
    block = b""
    for headers in sequence:
        block = encoder.encode(headers)
    return block


def test_the_memo_stays_small() -> None:
    encoder = MemoEncoder()
    for number in range(3 * MEMO_BLOCKS):
        fields = [(b":status", b"200")] * (number + 1)  # static: nothing inserted
        encoder.encode(fields)
        assert len(encoder._memo) <= MEMO_BLOCKS


def test_codecs_are_replaced_only_before_any_block() -> None:
    used = Encoder()
    used.encode([(b"x-a", b"1")])
    with pytest.raises(RuntimeError, match="replace its codec earlier"):
        MemoEncoder.replacing(used)
    fresh = Decoder()
    fresh.max_allowed_table_size = 100
    fresh.max_header_list_size = 300
    replaced = MemoDecoder.replacing(fresh)
    assert (replaced.max_allowed_table_size, replaced.max_header_list_size) == (100, 300)


REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":path", b"/spire.api.server.agent.v1.Agent/AttestAgent"),
    (b":authority", b"spire-server:8081"),
    (b"te", b"trailers"),
    (b"content-type", b"application/grpc"),
    (b"user-agent", b"grpc-python-grpclib/0.4.9 (linux; python 3.11)"),
    (b"grpc-timeout", b"119S"),
]


def _hpack_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("hpack")]


def test_a_new_connection_codes_its_first_blocks_without_hpack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    block = MemoEncoder().encode(REQUEST)  # an earlier connection's first request
    MemoDecoder().decode(block, raw=True)
    plain_encoder, plain_decoder = Encoder(), Decoder()
    expected_block = plain_encoder.encode(REQUEST)
    expected_headers = plain_decoder.decode(expected_block, raw=True)
    encoder, decoder = MemoEncoder(), MemoDecoder()
    with caplog.at_level(logging.DEBUG, logger="hpack"):
        assert encoder.encode(list(REQUEST)) == expected_block
        assert decoder.decode(expected_block, raw=True) == expected_headers
    assert _hpack_records(caplog) == []
    # The tables are left as hpack leaves them: the next blocks code alike.
    same_table(plain_encoder, encoder)
    same_table(plain_decoder, decoder)
    second = [*REQUEST[:-1], (b"grpc-timeout", b"118S")]
    next_block = plain_encoder.encode(second)
    assert encoder.encode(second) == next_block
    assert decoder.decode(next_block, raw=True) == plain_decoder.decode(next_block, raw=True)
    same_table(plain_decoder, decoder)


def test_a_first_block_is_checked_against_each_connections_limits() -> None:
    block = Encoder().encode(REQUEST)
    MemoDecoder().decode(block, raw=True)
    strict = MemoDecoder(max_header_list_size=100)
    with pytest.raises(HPACKError):
        strict.decode(block, raw=True)
    small = Encoder()
    small.header_table_size = 64
    shrunk = small.encode(REQUEST)  # a size update first, then the fields
    MemoDecoder().decode(shrunk, raw=True)
    limited = MemoDecoder()
    limited.max_allowed_table_size = 32
    with pytest.raises(HPACKError):
        limited.decode(shrunk, raw=True)


def test_the_first_blocks_remembered_stay_few_and_small() -> None:
    for number in range(3 * FIRST_BLOCKS):
        fields = [(b"x-a", str(number).encode())]
        block = MemoEncoder().encode(fields)
        MemoDecoder().decode(block, raw=True)
        assert len(hpack_memo._first_encoded) <= FIRST_BLOCKS
        assert len(hpack_memo._first_decoded) <= FIRST_BLOCKS
    large = [(b"x-large", b"v" * FIRST_BLOCK_BYTES)]
    block = MemoEncoder().encode(large, huffman=False)
    MemoDecoder().decode(block, raw=True)
    assert all(key[0] != block for key in hpack_memo._first_decoded)
    assert all(
        key[0] != tuple((*field, False) for field in large) for key in hpack_memo._first_encoded
    )
