# ruff: noqa: S608 - SQL text is assembled from constants only; every value is a bound parameter
"""SQL for filters and pages: each function returns a ``WHERE`` fragment and its parameters.

Fragments reference the tables under the aliases ``e`` (entries) and ``n`` (attested nodes).
Only constant SQL text is ever assembled; every value travels as a bound parameter.
"""

from __future__ import annotations

__all__ = ["entry_where", "name_page", "node_where", "pk_page", "set_match"]

from collections.abc import Sequence
from typing import Any

from pyspire_sdk.plugins.datastore import EntryFilter, MatchBehavior, NodeFilter, Page
from pyspire_sdk.stored_records import integer_page_token, name_page_token, to_micros


def pk_page(page: Page | None) -> tuple[int, int]:
    """``(after_pk, limit)`` for a page over rows ordered by integer key; limit -1 is all."""
    page = page or Page()
    return integer_page_token(page.token), (page.size + 1 if page.size else -1)


def name_page(page: Page | None) -> tuple[str, int]:
    """``(after_name, limit)`` for a page over rows ordered by trust domain name."""
    page = page or Page()
    return name_page_token(page.token), (page.size + 1 if page.size else -1)


def set_match(
    owner: str,
    table: str,
    key: str,
    columns: tuple[str, ...],
    values: Sequence[tuple[str, ...]],
    match: MatchBehavior,
) -> tuple[str, list[Any]]:
    """SQL (and its parameters) keeping rows of ``owner`` whose set in ``table`` matches.

    ``table`` holds one row per (owner, element) with the element in ``columns``, unique per
    owner, so counting matching rows counts distinct elements.
    """
    distinct = list(dict.fromkeys(values))
    count = len(distinct)
    if len(columns) == 1:
        member = f"{columns[0]} IN ({', '.join('?' * count)})"
    else:
        one = "(" + ", ".join("?" * len(columns)) + ")"
        member = f"({', '.join(columns)}) IN (VALUES {', '.join([one] * count)})"
    member_params = [part for value in distinct for part in value]
    has_any = f"{owner} IN (SELECT {key} FROM {table} WHERE {member})"
    has_all = (
        f"{owner} IN (SELECT {key} FROM {table} WHERE {member} "
        f"GROUP BY {key} HAVING COUNT(*) = {count})"
    )
    only_given = (
        f"NOT EXISTS (SELECT 1 FROM {table} AS other WHERE other.{key} = {owner} "
        f"AND NOT ({member}))"
    )
    if match is MatchBehavior.ANY:
        return has_any, member_params
    if match is MatchBehavior.SUPERSET:
        return has_all, member_params
    if match is MatchBehavior.SUBSET:
        return f"{has_any} AND {only_given}", member_params * 2
    return f"{has_all} AND {only_given}", member_params * 2


def entry_where(entry_filter: EntryFilter | None) -> tuple[str, list[Any]]:
    """``WHERE`` text over alias ``e`` and parameters for an entry filter (``"1"`` for none)."""
    clauses: list[str] = []
    params: list[Any] = []
    if entry_filter is not None:
        if entry_filter.by_spiffe_id is not None:
            clauses.append("e.spiffe_id = ?")
            params.append(str(entry_filter.by_spiffe_id))
        if entry_filter.by_parent_id is not None:
            clauses.append("e.parent_id = ?")
            params.append(str(entry_filter.by_parent_id))
        if entry_filter.by_hint is not None:
            clauses.append("e.hint = ?")
            params.append(entry_filter.by_hint)
        if entry_filter.by_downstream is not None:
            clauses.append("e.downstream = ?")
            params.append(int(entry_filter.by_downstream))
        if entry_filter.by_selectors is not None:
            sql, extra = set_match(
                "e.pk",
                "entry_selectors",
                "entry_pk",
                ("type", "value"),
                [(s.type, s.value) for s in entry_filter.by_selectors.selectors],
                entry_filter.by_selectors.match,
            )
            clauses.append(sql)
            params.extend(extra)
        if entry_filter.by_federates_with is not None:
            sql, extra = set_match(
                "e.pk",
                "entry_federates_with",
                "entry_pk",
                ("trust_domain",),
                [(td.name,) for td in entry_filter.by_federates_with.trust_domains],
                entry_filter.by_federates_with.match,
            )
            clauses.append(sql)
            params.extend(extra)
    return (" AND ".join(clauses) or "1"), params


def node_where(node_filter: NodeFilter | None) -> tuple[str, list[Any]]:
    """``WHERE`` text over alias ``n`` and parameters for a node filter (``"1"`` for none)."""
    clauses: list[str] = []
    params: list[Any] = []
    if node_filter is not None:
        if node_filter.by_attestation_type is not None:
            clauses.append("n.attestation_type = ?")
            params.append(node_filter.by_attestation_type)
        if node_filter.by_banned is not None:
            clauses.append("n.banned = ?")
            params.append(int(node_filter.by_banned))
        if node_filter.by_can_reattest is not None:
            clauses.append("n.can_reattest = ?")
            params.append(int(node_filter.by_can_reattest))
        if node_filter.by_expires_before is not None:
            clauses.append("n.expires_at IS NOT NULL AND n.expires_at < ?")
            params.append(to_micros(node_filter.by_expires_before))
        if node_filter.by_selectors is not None:
            sql, extra = set_match(
                "n.spiffe_id",
                "node_selectors",
                "spiffe_id",
                ("type", "value"),
                [(s.type, s.value) for s in node_filter.by_selectors.selectors],
                node_filter.by_selectors.match,
            )
            clauses.append(sql)
            params.extend(extra)
    return (" AND ".join(clauses) or "1"), params
