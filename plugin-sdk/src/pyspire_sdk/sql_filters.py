# ruff: noqa: S608 - SQL text is assembled from constants only; every value is a bound parameter
"""The ``WHERE`` text of the datastore contract's entry and node filters, for every SQL database.

What a filter means (each key, the four ways to match a set) is the same on every database
laid out as SPIRE's (an entry table ``e`` with list tables, a node table ``n`` with its
selectors); how a value is bound, how a row is tested against a set of rows and how a time is
stored differ. A plugin says those three things in a :class:`SqlParams` subclass and asks
:func:`entry_where` and :func:`node_where` for the text. Only constant SQL text is ever
assembled; every value travels as a bound parameter.
"""

from __future__ import annotations

__all__ = ["SqlParams", "entry_where", "node_where", "set_match"]

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pyspire_sdk.plugins.datastore import EntryFilter, MatchBehavior, NodeFilter


class SqlParams(ABC):
    """The bound parameters of one statement, in a database's placeholder style.

    :meth:`bind` records a value and returns its placeholder; :attr:`values` are the values in
    the order the database reads them.
    """

    everything = "TRUE"
    """The ``WHERE`` text that keeps every row."""

    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = []
        for value in values:
            self.bind(value)

    @abstractmethod
    def bind(self, value: Any) -> str:
        """Record ``value``; its placeholder."""

    @abstractmethod
    def member(self, columns: Sequence[str], rows: Sequence[tuple[str, ...]]) -> str:
        """SQL true where ``columns`` (qualified names) hold one of ``rows`` (distinct, not
        empty), binding what it needs; called again for each place the test is needed."""

    def moment(self, value: datetime) -> Any:
        """A time as its column stores it (as given by default)."""
        return value

    def flag(self, column: str, value: bool) -> str:
        """SQL true where the boolean ``column`` is ``value``."""
        return column if value else f"NOT {column}"


def set_match(
    params: SqlParams,
    owner: str,
    table: str,
    key: str,
    columns: tuple[str, ...],
    values: Sequence[tuple[str, ...]],
    match: MatchBehavior,
) -> str:
    """SQL keeping rows of ``owner`` whose set in ``table`` matches the set ``values``.

    ``table`` holds one row per (owner, element) with the element in ``columns``, unique per
    owner (the datastores write lists without duplicates), so counting matching rows counts
    distinct elements.
    """
    distinct = list(dict.fromkeys(values))

    def member(alias: str) -> str:
        return params.member([f"{alias}.{column}" for column in columns], distinct)

    def has(count_all: bool) -> str:
        sql = f"{owner} IN (SELECT m.{key} FROM {table} AS m WHERE {member('m')}"
        if count_all:
            sql += f" GROUP BY m.{key} HAVING COUNT(*) = {len(distinct)}"
        return sql + ")"

    if match is MatchBehavior.ANY:
        return has(count_all=False)
    if match is MatchBehavior.SUPERSET:
        return has(count_all=True)
    found = has(count_all=match is not MatchBehavior.SUBSET)
    only_given = (
        f"NOT EXISTS (SELECT 1 FROM {table} AS other WHERE other.{key} = {owner} "
        f"AND NOT ({member('other')}))"
    )
    return f"{found} AND {only_given}"


def entry_where(params: SqlParams, entry_filter: EntryFilter | None) -> str:
    """``WHERE`` text over alias ``e`` for an entry filter (``params.everything`` for none)."""
    clauses: list[str] = []
    if entry_filter is not None:
        if entry_filter.by_spiffe_id is not None:
            clauses.append(f"e.spiffe_id = {params.bind(str(entry_filter.by_spiffe_id))}")
        if entry_filter.by_parent_id is not None:
            clauses.append(f"e.parent_id = {params.bind(str(entry_filter.by_parent_id))}")
        if entry_filter.by_hint is not None:
            clauses.append(f"e.hint = {params.bind(entry_filter.by_hint)}")
        if entry_filter.by_downstream is not None:
            clauses.append(params.flag("e.downstream", entry_filter.by_downstream))
        if entry_filter.by_selectors is not None:
            clauses.append(
                set_match(
                    params,
                    "e.pk",
                    "entry_selectors",
                    "entry_pk",
                    ("type", "value"),
                    [(s.type, s.value) for s in entry_filter.by_selectors.selectors],
                    entry_filter.by_selectors.match,
                )
            )
        if entry_filter.by_federates_with is not None:
            clauses.append(
                set_match(
                    params,
                    "e.pk",
                    "entry_federates_with",
                    "entry_pk",
                    ("trust_domain",),
                    [(td.name,) for td in entry_filter.by_federates_with.trust_domains],
                    entry_filter.by_federates_with.match,
                )
            )
    return " AND ".join(clauses) or params.everything


def node_where(params: SqlParams, node_filter: NodeFilter | None) -> str:
    """``WHERE`` text over alias ``n`` for a node filter (``params.everything`` for none)."""
    clauses: list[str] = []
    if node_filter is not None:
        if node_filter.by_attestation_type is not None:
            clauses.append(f"n.attestation_type = {params.bind(node_filter.by_attestation_type)}")
        if node_filter.by_banned is not None:
            clauses.append(params.flag("n.banned", node_filter.by_banned))
        if node_filter.by_can_reattest is not None:
            clauses.append(params.flag("n.can_reattest", node_filter.by_can_reattest))
        if node_filter.by_expires_before is not None:
            moment = params.moment(node_filter.by_expires_before)
            clauses.append(f"n.expires_at < {params.bind(moment)}")
        if node_filter.by_selectors is not None:
            clauses.append(
                set_match(
                    params,
                    "n.spiffe_id",
                    "node_selectors",
                    "spiffe_id",
                    ("type", "value"),
                    [(s.type, s.value) for s in node_filter.by_selectors.selectors],
                    node_filter.by_selectors.match,
                )
            )
    return " AND ".join(clauses) or params.everything
