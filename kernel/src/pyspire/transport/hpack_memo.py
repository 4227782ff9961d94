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
what hpack itself would answer now, and coding it again would change nothing either. The
differential tests in ``kernel/tests/transport/test_hpack_memo.py`` hold this against plain
hpack on random header sequences.
"""

from __future__ import annotations

__all__ = ["MEMO_BLOCKS", "MemoDecoder", "MemoEncoder", "VersionedHeaderTable"]

from collections.abc import Iterable
from typing import Any

from hpack import Decoder, Encoder, HeaderTuple
from hpack.hpack import DEFAULT_MAX_HEADER_LIST_SIZE, _to_bytes
from hpack.table import HeaderTable

MEMO_BLOCKS = 4
"""Header blocks one encoder or decoder remembers: a connection's steady state repeats a
block per method and direction (a few), and a connection holds the memo for its whole life,
so it stays small; a fifth block empties it."""


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
        block = super().encode(fields, huffman)
        if not resized and table.version == self._memo_version:
            if len(self._memo) >= MEMO_BLOCKS:
                self._memo.clear()
            self._memo[key] = block
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
        decoded = list(super().decode(block, raw))
        if self.header_table.version == stamp[0]:
            if len(self._memo) >= MEMO_BLOCKS:
                self._memo.clear()
            self._memo[key] = decoded
        return list(decoded)
