"""The registration entry's field list has one home, :data:`pyspire_sdk.model.ENTRY_FIELDS`.

Every other list of entry fields is derived from it, or is a per-field table (a converter for
each field) whose keys are held to it here. A literal set, tuple or list naming several entry
fields anywhere else in the sources is a second copy that would not follow a change of the
first, and fails :func:`test_no_other_literal_list_of_entry_fields`.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspire_datastore_postgres.records import ENTRY_COLUMNS as POSTGRES_COLUMNS
from pyspire_datastore_sqlite.records import ENTRY_COLUMNS as SQLITE_COLUMNS

from pyspire.cli.entry_json import ENTRY_JSON_FIELDS
from pyspire.proto import entries as proto_entries
from pyspire.proto.gen.codec import spire_api_types as wire
from pyspire.server.api import entry as entry_api
from pyspire_sdk import stored_records
from pyspire_sdk.model import (
    ENTRY_DATASTORE_FIELDS,
    ENTRY_FIELDS,
    ENTRY_SETTABLE_FIELDS,
    RegistrationEntry,
)
from pyspire_sdk.plugins.datastore import ENTRY_MASK_FIELDS

ROOT = Path(__file__).resolve().parents[1]
WIRE_ONLY = frozenset({"additional_attributes"})
"""``spire.api.types.Entry`` fields with no stored counterpart."""


def test_the_model_list_is_the_record_and_the_wire_message() -> None:
    assert tuple(field.name for field in dataclasses.fields(RegistrationEntry)) == ENTRY_FIELDS
    wire_fields = {field.name for field in dataclasses.fields(wire.Entry)}
    assert wire_fields - WIRE_ONLY == set(ENTRY_FIELDS)
    mask_fields = {field.name for field in dataclasses.fields(wire.EntryMask)}
    assert mask_fields - WIRE_ONLY == set(ENTRY_FIELDS) - {"id"}
    assert set(ENTRY_FIELDS) == ENTRY_SETTABLE_FIELDS | ENTRY_DATASTORE_FIELDS
    assert not ENTRY_SETTABLE_FIELDS & ENTRY_DATASTORE_FIELDS


def test_every_derived_list_follows_the_model() -> None:
    assert ENTRY_MASK_FIELDS == ENTRY_SETTABLE_FIELDS
    assert set(ENTRY_FIELDS) - {"id"} == proto_entries.ENTRY_FIELDS
    assert set(ENTRY_FIELDS) | WIRE_ONLY == ENTRY_JSON_FIELDS
    stored = set(stored_records.ENTRY_ROW) - {"pk", "entry_id"}
    assert stored | set(stored_records.ENTRY_LIST_FIELDS) | {"id"} == set(ENTRY_FIELDS)
    expected = ", ".join(stored_records.ENTRY_ROW)
    assert expected == SQLITE_COLUMNS
    assert ", ".join(f"e.{column}" for column in stored_records.ENTRY_ROW) == POSTGRES_COLUMNS


def test_per_field_tables_cover_exactly_the_fields() -> None:
    assert set(entry_api._FIELD_CONVERTERS) == ENTRY_SETTABLE_FIELDS
    assert set(proto_entries._MASKED) == set(ENTRY_FIELDS) - {"id"}


def _sources() -> Iterator[Path]:
    roots = [ROOT / "kernel" / "src", ROOT / "plugin-sdk" / "src"]
    roots += sorted((ROOT / "plugins").glob("*/src"))
    generated = ROOT / "kernel" / "src" / "pyspire" / "proto" / "gen"
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if not path.is_relative_to(generated):
                yield path


def _literal_lists(source: str) -> Iterator[tuple[int, set[str]]]:
    """(line, entry field names) of each literal set, tuple or list naming five or more."""
    names = set(ENTRY_FIELDS)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Set | ast.Tuple | ast.List):
            found = {
                element.value
                for element in node.elts
                if isinstance(element, ast.Constant) and element.value in names
            }
            if len(found) >= 5:
                yield node.lineno, found


def test_no_other_literal_list_of_entry_fields() -> None:
    copies = [
        f"{path.relative_to(ROOT)}:{line}: {sorted(found)}"
        for path in _sources()
        for line, found in _literal_lists(path.read_text(encoding="utf-8"))
    ]
    assert copies == [], "entry fields listed again; derive from ENTRY_FIELDS:\n" + "\n".join(
        copies
    )


@pytest.mark.parametrize(
    "source",
    [
        'FIELDS = frozenset({"spiffe_id", "parent_id", "selectors", "hint", "admin"})',
        'ROW = ("entry_id", "spiffe_id", "parent_id", "x509_svid_ttl", "jwt_svid_ttl", "admin")',
    ],
)
def test_the_guard_finds_a_copy(source: str) -> None:
    assert list(_literal_lists(source))
