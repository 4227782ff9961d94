"""Only ``pyspire.proto`` knows the protobuf wire: nothing else writes a tag, reads a varint or
builds a message class of its own.

Every Python source file of the kernel outside ``proto/``, of the SDK and of every plugin is
parsed, and the marks of hand-written wire code are refused:

- a protobuf tag computed by hand (``number << 3``) or kept as a bytes constant whose name says
  tag (``_TAG_FIELD_1 = b"\\x0a"``);
- a class of its own that grpclib would encode or decode (``SerializeToString`` /
  ``FromString`` methods: the codecs and :class:`pyspire.proto.messages.EncodedMessage` do
  that);
- reaching into betterproto's field metadata (``_betterproto``, ``_betterproto_meta``) or the
  codecs' wire helpers (``pyspire.proto.runtime``, the codecs' private ``_read_*`` functions);
- a field-number table (``FIELD_NUMBERS``) used outside ``proto/``.

The checker is tested on the shapes of the wire code it replaced, so it can fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOM = ROOT / "kernel" / "src" / "pyspire" / "proto"

_WIRE_METHODS = frozenset({"SerializeToString", "FromString"})
_METADATA = frozenset({"_betterproto", "_betterproto_meta", "FIELD_NUMBERS"})


def _sources() -> Iterator[Path]:
    roots = [ROOT / "kernel" / "src", ROOT / "plugin-sdk" / "src"]
    roots += sorted((ROOT / "plugins").glob("*/src"))
    roots += sorted((ROOT / "examples").glob("*/src"))
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if not path.is_relative_to(PROTO_ROOM):
                yield path


def _is_bytes(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, bytes)


def _wire_marks(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, what) for each mark of hand-written wire code in ``tree``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.LShift)
            and isinstance(node.right, ast.Constant)
            and node.right.value == 3
        ):
            yield node.lineno, "a tag computed by hand (<< 3)"
        elif isinstance(node, ast.Assign) and _is_bytes(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name) and "TAG" in target.id.upper():
                    yield node.lineno, f"a tag kept as bytes ({target.id})"
        elif isinstance(node, ast.FunctionDef) and node.name in _WIRE_METHODS:
            yield node.lineno, f"a message class of its own ({node.name})"
        elif isinstance(node, ast.Attribute) and node.attr in _METADATA:
            yield node.lineno, f"field metadata ({node.attr})"
        elif isinstance(node, ast.Name) and node.id in _METADATA:
            yield node.lineno, f"field metadata ({node.id})"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == "pyspire.proto.runtime" or module.startswith("pyspire.proto.wire"):
                yield node.lineno, f"the wire's helpers ({module})"
            for alias in node.names:
                if alias.name.startswith("_read_") or alias.name in _METADATA:
                    yield node.lineno, f"a codec's internals ({alias.name})"


def _marks(source: str) -> list[str]:
    return [what for _, what in _wire_marks(ast.parse(source))]


def test_no_wire_code_outside_the_proto_room() -> None:
    found = []
    for path in _sources():
        for line, what in _wire_marks(ast.parse(path.read_text(encoding="utf-8"))):
            found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert found == [], "wire code outside kernel/src/pyspire/proto:\n" + "\n".join(found)


def test_the_sources_are_found() -> None:
    paths = {path.relative_to(ROOT).as_posix() for path in _sources()}
    assert "kernel/src/pyspire/server/api/entry.py" in paths
    assert "kernel/src/pyspire/agent/client.py" in paths
    assert not any(path.startswith("kernel/src/pyspire/proto/") for path in paths)
    assert any(path.startswith("plugins/") for path in paths)


@pytest.mark.parametrize(
    "source",
    [
        '_TAG_FIELD_1 = b"\\x0a"',
        "def length_delimited(number, payload):\n    return encode_varint((number << 3) | 2)",
        "class BatchRequestWire:\n    @classmethod\n    def FromString(cls, data): ...",
        "class Encoded(Base):\n    def SerializeToString(self): return self.data",
        "_betterproto_meta = field_metadata(Response)",
        "meta = message_type._betterproto",
        "from pyspire.proto.wire import read_tag",
        "from pyspire.proto.runtime import read_varint",
        "from pyspire.proto.gen.codec.spire_api_types import _read_Entry",
        "number = FIELD_NUMBERS['Entry']['hint']",
    ],
)
def test_the_checker_finds_hand_written_wire_code(source: str) -> None:
    assert _marks(source)


def test_the_checker_leaves_other_code_alone() -> None:
    source = (
        "SEQUENCE_TAG = 0x30\n"
        "flags = 1 << 4\n"
        "data = encode_entry(entry)\n"
        "from pyspire.proto.entries import encode_entry\n"
        "from pyspire.proto.gen.codec.spire_api_types import decode_Entry\n"
    )
    assert _marks(source) == []
