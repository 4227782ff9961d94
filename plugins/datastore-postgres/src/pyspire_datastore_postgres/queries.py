# ruff: noqa: S608 - SQL text is assembled from constants only; every value is a bound parameter
"""SQL for filters: each function returns a ``WHERE`` fragment whose values are bound parameters.

Fragments reference the tables under the aliases ``e`` (entries) and ``n`` (attested nodes).
Only constant SQL text is ever assembled; every value travels as a numbered parameter
(``$1``...) collected in a :class:`Params`.
"""

from __future__ import annotations

__all__ = ["Params", "entry_where", "node_where", "set_match"]

from collections.abc import Sequence
from typing import Any

from pyspire_sdk.plugins.datastore import EntryFilter, MatchBehavior, NodeFilter


class Params:
    """Bound parameters of one statement; :meth:`add` returns the placeholder of a value."""

    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = list(values)

    def add(self, value: Any) -> str:
        """Bind ``value``; its placeholder (``$n``)."""
        self.values.append(value)
        return f"${len(self.values)}"


def set_match(
    params: Params,
    owner: str,
    table: str,
    key: str,
    columns: tuple[str, str] | tuple[str],
    values: Sequence[tuple[str, ...]],
    match: MatchBehavior,
) -> str:
    """SQL keeping rows of ``owner`` whose set in ``table`` matches the set ``values``.

    ``table`` holds one row per (owner, element) with the element in ``columns``, unique per
    owner, so counting matching rows counts distinct elements. The set travels as one array
    parameter per column, whatever its size.
    """
    distinct = list(dict.fromkeys(values))
    arrays = [params.add([value[i] for value in distinct]) for i in range(len(columns))]

    def member(alias: str) -> str:
        if len(columns) == 1:
            return f"{alias}.{columns[0]} = ANY({arrays[0]}::text[])"
        named = ", ".join(f"{alias}.{column}" for column in columns)
        unnested = ", ".join(f"{array}::text[]" for array in arrays)
        return f"({named}) IN (SELECT * FROM unnest({unnested}))"

    has_any = f"{owner} IN (SELECT m.{key} FROM {table} AS m WHERE {member('m')})"
    has_all = (
        f"{owner} IN (SELECT m.{key} FROM {table} AS m WHERE {member('m')} "
        f"GROUP BY m.{key} HAVING COUNT(*) = {len(distinct)})"
    )
    only_given = (
        f"NOT EXISTS (SELECT 1 FROM {table} AS other WHERE other.{key} = {owner} "
        f"AND NOT ({member('other')}))"
    )
    if match is MatchBehavior.ANY:
        return has_any
    if match is MatchBehavior.SUPERSET:
        return has_all
    if match is MatchBehavior.SUBSET:
        return f"{has_any} AND {only_given}"
    return f"{has_all} AND {only_given}"


def entry_where(params: Params, entry_filter: EntryFilter | None) -> str:
    """``WHERE`` text over alias ``e`` for an entry filter (``TRUE`` for none)."""
    clauses: list[str] = []
    if entry_filter is not None:
        if entry_filter.by_spiffe_id is not None:
            clauses.append(f"e.spiffe_id = {params.add(str(entry_filter.by_spiffe_id))}")
        if entry_filter.by_parent_id is not None:
            clauses.append(f"e.parent_id = {params.add(str(entry_filter.by_parent_id))}")
        if entry_filter.by_hint is not None:
            clauses.append(f"e.hint = {params.add(entry_filter.by_hint)}")
        if entry_filter.by_downstream is not None:
            clauses.append("e.downstream" if entry_filter.by_downstream else "NOT e.downstream")
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
    return " AND ".join(clauses) or "TRUE"


def node_where(params: Params, node_filter: NodeFilter | None) -> str:
    """``WHERE`` text over alias ``n`` for a node filter (``TRUE`` for none)."""
    clauses: list[str] = []
    if node_filter is not None:
        if node_filter.by_attestation_type is not None:
            clauses.append(f"n.attestation_type = {params.add(node_filter.by_attestation_type)}")
        if node_filter.by_banned is not None:
            clauses.append("n.banned" if node_filter.by_banned else "NOT n.banned")
        if node_filter.by_can_reattest is not None:
            clauses.append(
                "n.can_reattest" if node_filter.by_can_reattest else "NOT n.can_reattest"
            )
        if node_filter.by_expires_before is not None:
            clauses.append(f"n.expires_at < {params.add(node_filter.by_expires_before)}")
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
    return " AND ".join(clauses) or "TRUE"
