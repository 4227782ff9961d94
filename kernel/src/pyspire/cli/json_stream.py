"""A JSON document with one long list, written item by item as the items arrive.

``entry show -output json`` over a hundred thousand entries, or ``entry create -data`` over as
many results, must neither wait for the last page before printing nor hold one document of tens
of megabytes. :class:`JsonListWriter` writes ``{"<key>": [item, ...], <other fields>}`` piece by
piece, formatted exactly as :func:`~pyspire.cli.admin_client.print_json` formats the whole
document, so the output is byte for byte what it was when it was built at once.
"""

from __future__ import annotations

__all__ = ["JsonListWriter", "dumps_indented"]

import json
import json.encoder
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

_INDENT = 2
_STEP = " " * _INDENT
_string = json.encoder.encode_basestring_ascii
_CONSTANTS = {True: "true", False: "false", None: "null"}


def dumps_indented(value: Any, pad: str = "") -> str:
    """``json.dumps(value, indent=2)``, each line after the first prefixed with ``pad``, byte
    for byte; several times faster on the plain documents the CLI prints (``json`` formats
    indented output in pure Python, one call per token), which is what lets ``entry show
    -output json`` print a hundred thousand entries in seconds. Anything but dicts with
    string keys, lists, strings, integers, booleans and None is left to ``json``."""
    kind = value.__class__
    if kind is str:
        return _string(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = pad + _STEP
        parts = []
        for key, item in value.items():
            if key.__class__ is not str:
                return _json(value, pad)
            parts.append(f"{inner}{_string(key)}: {dumps_indented(item, inner)}")
        return "{\n" + ",\n".join(parts) + "\n" + pad + "}"
    if kind is list:
        if not value:
            return "[]"
        inner = pad + _STEP
        return (
            "[\n"
            + ",\n".join(inner + dumps_indented(item, inner) for item in value)
            + "\n"
            + pad
            + "]"
        )
    if kind is int:
        return int.__repr__(value)
    if kind is bool or value is None:
        return _CONSTANTS[value]
    return _json(value, pad)


def _json(value: Any, pad: str) -> str:
    return json.dumps(value, indent=_INDENT).replace("\n", "\n" + pad)


_ELEMENT_PAD = " " * (2 * _INDENT)


def _nested(document: Any) -> str:
    """``document`` as an element of the list: indented two levels."""
    return dumps_indented(document, _ELEMENT_PAD)


class JsonListWriter:
    """Writes ``{"<key>": [...], **tail}`` through ``write`` (a line writer) as items come.

    The last item is held back until the next one (or :meth:`close`) says whether it needs a
    comma. Use as a context manager, which closes the document also when the work fails half
    way, so what was printed is still one valid JSON document.
    """

    def __init__(
        self, write: Callable[[str], None], key: str, tail: Mapping[str, Any] | None = None
    ) -> None:
        self._write = write
        self._key = key
        self._tail = dict(tail or {})
        self._held: str | None = None
        self._opened = False
        self._closed = False

    def __enter__(self) -> JsonListWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, item: Any) -> None:
        """Append one element to the list."""
        self.extend((item,))

    def extend(self, items: Iterable[Any]) -> None:
        """Append elements to the list, written in one piece (a page of a listing: one write
        per page rather than per element)."""
        elements = [_ELEMENT_PAD + _nested(item) for item in items]
        if not elements:
            return
        if not self._opened:
            self._write("{\n" + " " * _INDENT + json.dumps(self._key) + ": [")
            self._opened = True
        if self._held is not None:
            elements.insert(0, self._held)
        self._held = elements.pop()
        if elements:
            self._write(",\n".join(elements) + ",")

    def close(self) -> None:
        """End the list and the document (an empty list when nothing was added)."""
        if self._closed:
            return
        self._closed = True
        tail = "".join(
            ",\n" + " " * _INDENT + json.dumps(name) + ": " + _nested_field(value)
            for name, value in self._tail.items()
        )
        if not self._opened:
            self._write("{\n" + " " * _INDENT + json.dumps(self._key) + ": []" + tail + "\n}")
            return
        assert self._held is not None
        self._write(self._held)
        self._write(" " * _INDENT + "]" + tail + "\n}")


def _nested_field(value: Any) -> str:
    """A top-level field's value: indented one level."""
    return dumps_indented(value, _STEP)
