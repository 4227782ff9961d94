"""HPACK that remembers the header blocks a connection repeats.

A gRPC connection says the same things call after call: the agent's request headers for a
method, the server's response headers, its ``grpc-status: 0`` trailers. Once every field of
such a block sits in the connection's dynamic table, the block encodes to, and decodes from,
the same bytes each time, and hpack still walks it field by field (a table search per field
to encode, an integer decode and a log call per field to decode). :class:`MemoEncoder` and
:class:`MemoDecoder` are hpack's own encoder and decoder that answer such a block from a
small per-connection memo instead.

Correctness rests on one invariant: a block is remembered only when coding it left the
dynamic table exactly as it was (no field inserted, no size update), and every remembered
answer is forgotten the moment the table changes (each table counts its changes in
``version``), or, for the decoder, when a limit it checks changes. So a remembered answer is
what hpack itself would answer now, and coding it again would change nothing either.

A connection's first blocks are another case: they insert their fields, so no connection
codes them twice, but every new connection codes the same ones (an agent's first request,
the server's first response headers and trailers) from the same state, an empty dynamic
table. Coding a block on an empty table depends on nothing but the block (or the fields),
the table's size and, to decode, the decoder's limits; so the process remembers, for at most
:data:`FIRST_BLOCKS` such blocks of at most :data:`FIRST_BLOCK_BYTES`, the answer and the
fields coding it inserted, and a new connection takes both (the table left as hpack would
have left it) instead of coding again. A block that changes the table's size is left to
hpack. The differential tests in ``kernel/tests/transport/test_hpack_memo.py`` hold all
this against plain hpack on random header sequences.
"""

from __future__ import annotations

__all__ = [
    "FIRST_BLOCKS",
    "FIRST_BLOCK_BYTES",
    "MEMO_BLOCKS",
    "MemoDecoder",
    "MemoEncoder",
    "VersionedHeaderTable",
]

from collections.abc import Hashable, Iterable
from typing import Any, TypeVar

from hpack import Decoder, Encoder, HeaderTuple
from hpack.hpack import DEFAULT_MAX_HEADER_LIST_SIZE, _to_bytes
from hpack.table import HeaderTable

MEMO_BLOCKS = 4
"""Header blocks one encoder or decoder remembers: a connection's steady state repeats a
block per method and direction (a few), and a connection holds the memo for its whole life,
so it stays small; a fifth block empties it."""

FIRST_BLOCKS = 32
"""Blocks coded on an empty table that the process remembers, per direction: the first
blocks of every method's request, answer and trailers, many times over; a block more empties
them (whoever sends ever new first blocks finds them empty and pays what hpack costs)."""

FIRST_BLOCK_BYTES = 4096
"""The largest block remembered as coded on an empty table (a gRPC request's is some 100
bytes): what the process keeps stays under :data:`FIRST_BLOCKS` times this, and its fields."""


class VersionedHeaderTable(HeaderTable):
    """hpack's header table, counting every change to its dynamic part in ``version``."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


def _fresh_table(old: HeaderTable) -> VersionedHeaderTable:
    """A versioned table in the state of ``old``, which must hold no entry yet: the codecs
    are replaced before a connection's first header block."""
    if old.dynamic_entries:
        raise RuntimeError("an hpack table already holds entries: replace its codec earlier")
    table = VersionedHeaderTable()
    table._maxsize = old._maxsize
    table.resized = old.resized
    return table


_HeaderKey = tuple[tuple[bytes, bytes, bool], ...]
_Entries = tuple[tuple[bytes, bytes], ...]
_Key = TypeVar("_Key", bound=Hashable)
_Answer = TypeVar("_Answer")


class _TableAfter:
    """What coding a block on an empty table left in it: the fields inserted (newest first,
    as the table holds them), their size, and how many changes the table counted."""

    __slots__ = ("changes", "entries", "size")

    def __init__(self, table: VersionedHeaderTable, version_before: int) -> None:
        self.entries: _Entries = tuple(table.dynamic_entries)
        self.size: int = table._current_size
        self.changes = table.version - version_before

    def restore(self, table: VersionedHeaderTable) -> None:
        """Leave ``table`` (empty, of the size the block was coded at) as coding it did."""
        table.dynamic_entries.extend(self.entries)
        table._current_size = self.size
        table.version += self.changes


def _remember(answers: dict[_Key, _Answer], key: _Key, answer: _Answer) -> None:
    if len(answers) >= FIRST_BLOCKS:
        answers.clear()
    answers[key] = answer


_first_encoded: dict[tuple[_HeaderKey, bool, int], tuple[bytes, _TableAfter]] = {}
_first_decoded: dict[
    tuple[bytes, bool, int, bool, int, int], tuple[tuple[HeaderTuple, ...], _TableAfter]
] = {}


def _header_key(headers: Iterable[Any]) -> _HeaderKey | None:
    """The fields as hpack's ``encode`` reads them (name, value, never indexed), or None for a
    shape it is left to (a dict)."""
    if isinstance(headers, dict):
        return None
    key = []
    for header in headers:
        if isinstance(header, HeaderTuple):
            sensitive = not header.indexable
        else:
            sensitive = bool(header[2]) if len(header) > 2 else False
        key.append((_to_bytes(header[0]), _to_bytes(header[1]), sensitive))
    return tuple(key)


class MemoEncoder(Encoder):
    """hpack's encoder, answering a repeated block that changes nothing from its memo."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table: VersionedHeaderTable = VersionedHeaderTable()
        self._memo: dict[tuple[_HeaderKey, bool], bytes] = {}
        self._memo_version = 0

    @classmethod
    def replacing(cls, old: Encoder) -> MemoEncoder:
        """An encoder in the state of ``old``, which has encoded nothing yet."""
        encoder = cls()
        encoder.header_table = _fresh_table(old.header_table)
        encoder.table_size_changes = list(old.table_size_changes)
        encoder.huffman_coder = old.huffman_coder
        return encoder

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        fields = _header_key(headers)
        if fields is None:
            return super().encode(headers, huffman)
        table = self.header_table
        if table.version != self._memo_version:
            self._memo.clear()
            self._memo_version = table.version
        key = (fields, huffman)
        block = self._memo.get(key)
        if block is not None:
            return block  # a resize since it was remembered would have emptied the memo
        # A pending resize is signalled at the start of this block: not a block to repeat.
        resized = table.resized
        block = self._encode_fields(fields, huffman)
        if not resized and table.version == self._memo_version:
            if len(self._memo) >= MEMO_BLOCKS:
                self._memo.clear()
            self._memo[key] = block
        return block

    def _encode_fields(self, fields: _HeaderKey, huffman: bool) -> bytes:
        """hpack's encoding of ``fields``, the process's when the table is empty."""
        table = self.header_table
        if table.dynamic_entries or table.resized:
            return super().encode(fields, huffman)
        shared = (fields, huffman, table._maxsize)
        known = _first_encoded.get(shared)
        if known is not None:
            block, after = known
            after.restore(table)
            return block
        version = table.version
        block = super().encode(fields, huffman)
        if len(block) <= FIRST_BLOCK_BYTES and table._maxsize == shared[2] and not table.resized:
            _remember(_first_encoded, shared, (block, _TableAfter(table, version)))
        return block


class MemoDecoder(Decoder):
    """hpack's decoder, answering a repeated block that changes nothing from its memo."""

    def __init__(self, max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE) -> None:
        super().__init__(max_header_list_size)
        self.header_table: VersionedHeaderTable = VersionedHeaderTable()
        self._memo: dict[tuple[bytes, bool], list[HeaderTuple]] = {}
        self._memo_stamp: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def replacing(cls, old: Decoder) -> MemoDecoder:
        """A decoder in the state of ``old``, which has decoded nothing yet."""
        decoder = cls(old.max_header_list_size)
        decoder.header_table = _fresh_table(old.header_table)
        decoder.max_allowed_table_size = old.max_allowed_table_size
        return decoder

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        stamp = (self.header_table.version, self.max_header_list_size, self.max_allowed_table_size)
        if stamp != self._memo_stamp:
            self._memo.clear()
            self._memo_stamp = stamp
        block = data if isinstance(data, bytes) else bytes(data)
        key = (block, raw)
        headers = self._memo.get(key)
        if headers is not None:
            return list(headers)
        decoded = self._decode_block(block, raw)
        if self.header_table.version == stamp[0]:
            if len(self._memo) >= MEMO_BLOCKS:
                self._memo.clear()
            self._memo[key] = decoded
        return list(decoded)

    def _decode_block(self, block: bytes, raw: bool) -> list[HeaderTuple]:
        """hpack's decoding of ``block``, the process's when the table is empty."""
        table = self.header_table
        if table.dynamic_entries or len(block) > FIRST_BLOCK_BYTES:
            return list(super().decode(block, raw))
        size, resized = table._maxsize, table.resized
        shared = (
            block,
            raw,
            size,
            resized,
            self.max_header_list_size,
            self.max_allowed_table_size,
        )
        known = _first_decoded.get(shared)
        if known is not None:
            headers, after = known
            after.restore(table)
            return list(headers)
        version = table.version
        decoded = list(super().decode(block, raw))
        if table._maxsize == size and table.resized == resized:
            _remember(_first_decoded, shared, (tuple(decoded), _TableAfter(table, version)))
        return decoded
