# ruff: noqa: S608 - SQL text is assembled from constants only; every value is a bound parameter
"""SQL for filters: each function returns a ``WHERE`` fragment whose values are bound parameters.

Fragments reference the tables under the aliases ``e`` (entries) and ``n`` (attested nodes).
Only constant SQL text is ever assembled; every value travels as a ``%s`` parameter collected in
a list, in the order of the placeholders. Sets travel as row constructors, ``(a, b) IN ((%s,
%s), ...)``, which MySQL and MariaDB both read.
"""

from __future__ import annotations

__all__ = ["entry_where", "node_where", "placeholders", "set_match"]

from collections.abc import Sequence
from typing import Any

from pyspire_sdk.plugins.datastore import EntryFilter, MatchBehavior, NodeFilter
from pyspire_sdk.stored_records import to_micros


def placeholders(count: int, width: int = 1) -> str:
    """``count`` comma-separated placeholders, each a row of ``width`` when ``width`` > 1."""
    one = "%s" if width == 1 else "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([one] * count)


def set_match(
    params: list[Any],
    owner: str,
    table: str,
    key: str,
    columns: tuple[str, str] | tuple[str],
    values: Sequence[tuple[str, ...]],
    match: MatchBehavior,
) -> str:
    """SQL keeping rows of ``owner`` whose set in ``table`` matches the set ``values``.

    ``table`` holds one row per (owner, element) with the element in ``columns``, unique per
    owner (the store writes lists without duplicates), so counting matching rows counts
    distinct elements.
    """
    distinct = list(dict.fromkeys(values))
    width = len(columns)

    def member(alias: str) -> str:
        named = ", ".join(f"{alias}.{column}" for column in columns)
        for value in distinct:
            params.extend(value)
        if width == 1:
            return f"{named} IN ({placeholders(len(distinct))})"
        return f"({named}) IN ({placeholders(len(distinct), width)})"

    if match is MatchBehavior.ANY:
        return f"{owner} IN (SELECT m.{key} FROM {table} AS m WHERE {member('m')})"
    if match is MatchBehavior.SUPERSET:
        return (
            f"{owner} IN (SELECT m.{key} FROM {table} AS m WHERE {member('m')} "
            f"GROUP BY m.{key} HAVING COUNT(*) = {len(distinct)})"
        )
    if match is MatchBehavior.SUBSET:
        has = f"{owner} IN (SELECT m.{key} FROM {table} AS m WHERE {member('m')})"
    else:
        has = (
            f"{owner} IN (SELECT m.{key} FROM {table} AS m WHERE {member('m')} "
            f"GROUP BY m.{key} HAVING COUNT(*) = {len(distinct)})"
        )
    only_given = (
        f"NOT EXISTS (SELECT 1 FROM {table} AS other WHERE other.{key} = {owner} "
        f"AND NOT ({member('other')}))"
    )
    return f"{has} AND {only_given}"


def entry_where(params: list[Any], entry_filter: EntryFilter | None) -> str:
    """``WHERE`` text over alias ``e`` for an entry filter (``TRUE`` for none)."""
    clauses: list[str] = []
    if entry_filter is not None:
        if entry_filter.by_spiffe_id is not None:
            clauses.append("e.spiffe_id = %s")
            params.append(str(entry_filter.by_spiffe_id))
        if entry_filter.by_parent_id is not None:
            clauses.append("e.parent_id = %s")
            params.append(str(entry_filter.by_parent_id))
        if entry_filter.by_hint is not None:
            clauses.append("e.hint = %s")
            params.append(entry_filter.by_hint)
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


def node_where(params: list[Any], node_filter: NodeFilter | None) -> str:
    """``WHERE`` text over alias ``n`` for a node filter (``TRUE`` for none)."""
    clauses: list[str] = []
    if node_filter is not None:
        if node_filter.by_attestation_type is not None:
            clauses.append("n.attestation_type = %s")
            params.append(node_filter.by_attestation_type)
        if node_filter.by_banned is not None:
            clauses.append("n.banned" if node_filter.by_banned else "NOT n.banned")
        if node_filter.by_can_reattest is not None:
            clauses.append(
                "n.can_reattest" if node_filter.by_can_reattest else "NOT n.can_reattest"
            )
        if node_filter.by_expires_before is not None:
            clauses.append("n.expires_at < %s")
            params.append(to_micros(node_filter.by_expires_before))
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
