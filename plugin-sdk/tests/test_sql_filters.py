"""The filters' SQL means what the contract says, run on a real SQLite database: every match
mode of a selector set, scalar keys, booleans and times, each with its parameters bound."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from pyspire_sdk.plugins.datastore import EntryFilter, MatchBehavior, NodeFilter, SelectorMatch
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.sql_filters import SqlParams, entry_where, node_where


class _QuestionMarks(SqlParams):
    everything = "1"

    def bind(self, value: Any) -> str:
        self.values.append(value)
        return "?"

    def member(self, columns: Sequence[str], rows: Sequence[tuple[str, ...]]) -> str:
        for row in rows:
            self.values.extend(row)
        one = "(" + ", ".join("?" * len(columns)) + ")"
        return f"({', '.join(columns)}) IN (VALUES {', '.join([one] * len(rows))})"

    def moment(self, value: datetime) -> Any:
        return int(value.timestamp())

    def flag(self, column: str, value: bool) -> str:
        return f"{column} = {self.bind(int(value))}"


@pytest.fixture
def database() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    connection.executescript(
        """
        CREATE TABLE entries (pk INTEGER PRIMARY KEY, spiffe_id TEXT, parent_id TEXT,
            hint TEXT, downstream INTEGER);
        CREATE TABLE entry_selectors (entry_pk INTEGER, type TEXT, value TEXT);
        CREATE TABLE entry_federates_with (entry_pk INTEGER, trust_domain TEXT);
        CREATE TABLE attested_nodes (pk INTEGER PRIMARY KEY, spiffe_id TEXT,
            attestation_type TEXT, banned INTEGER, can_reattest INTEGER, expires_at INTEGER);
        CREATE TABLE node_selectors (spiffe_id TEXT, type TEXT, value TEXT);
        INSERT INTO entries VALUES (1, 'spiffe://td/a', 'spiffe://td/p', 'h', 0),
            (2, 'spiffe://td/b', 'spiffe://td/p', NULL, 1),
            (3, 'spiffe://td/c', 'spiffe://td/q', NULL, 0);
        INSERT INTO entry_selectors VALUES (1, 'u', '1'), (2, 'u', '1'), (2, 'g', '2'),
            (3, 'g', '2');
        INSERT INTO attested_nodes VALUES (1, 'spiffe://td/n1', 'x', 0, 1, 100),
            (2, 'spiffe://td/n2', 'y', 1, 0, NULL), (3, 'spiffe://td/n3', 'x', 0, 0, 300);
        INSERT INTO node_selectors VALUES ('spiffe://td/n1', 'k', 'v');
        """
    )
    yield connection
    connection.close()


def _entries(database: sqlite3.Connection, entry_filter: EntryFilter | None) -> list[int]:
    params = _QuestionMarks()
    where = entry_where(params, entry_filter)
    sql = f"SELECT pk FROM entries AS e WHERE {where} ORDER BY pk"  # noqa: S608
    return [row[0] for row in database.execute(sql, params.values)]


def _nodes(database: sqlite3.Connection, node_filter: NodeFilter) -> list[int]:
    params = _QuestionMarks()
    where = node_where(params, node_filter)
    sql = f"SELECT pk FROM attested_nodes AS n WHERE {where} ORDER BY pk"  # noqa: S608
    return [row[0] for row in database.execute(sql, params.values)]


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (MatchBehavior.EXACT, [1]),
        (MatchBehavior.SUBSET, [1]),
        (MatchBehavior.SUPERSET, [1, 2]),
        (MatchBehavior.ANY, [1, 2]),
    ],
)
def test_each_match_mode_of_a_selector_set(
    database: sqlite3.Connection, match: MatchBehavior, expected: list[int]
) -> None:
    one = SelectorMatch((Selector("u", "1"), Selector("u", "1")), match)
    assert _entries(database, EntryFilter(by_selectors=one)) == expected


def test_a_two_element_set_and_scalar_keys(database: sqlite3.Connection) -> None:
    both = (Selector("u", "1"), Selector("g", "2"))
    assert _entries(database, EntryFilter(by_selectors=SelectorMatch(both))) == [2]
    subset = SelectorMatch(both, MatchBehavior.SUBSET)
    assert _entries(database, EntryFilter(by_selectors=subset)) == [1, 2, 3]
    assert _entries(database, None) == [1, 2, 3]
    parent = SpiffeId.parse("spiffe://td/p")
    assert _entries(database, EntryFilter(by_parent_id=parent, by_downstream=False)) == [1]
    assert _entries(database, EntryFilter(by_hint="h")) == [1]


def test_node_keys_booleans_and_times(database: sqlite3.Connection) -> None:
    assert _nodes(database, NodeFilter(by_attestation_type="x", by_banned=False)) == [1, 3]
    assert _nodes(database, NodeFilter(by_can_reattest=True)) == [1]
    before = datetime.fromtimestamp(200, UTC)
    assert _nodes(database, NodeFilter(by_expires_before=before)) == [1]
    selectors = SelectorMatch((Selector("k", "v"),), MatchBehavior.ANY)
    assert _nodes(database, NodeFilter(by_selectors=selectors)) == [1]
