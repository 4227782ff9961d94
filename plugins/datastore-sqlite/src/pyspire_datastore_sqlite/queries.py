"""SQL for filters and pages: each function returns a ``WHERE`` fragment and its parameters.

Fragments reference the tables under the aliases ``e`` (entries) and ``n`` (attested nodes).
What a filter means is :mod:`pyspire_sdk.sql_filters`'; here, how SQLite binds a value (``?``),
tests a row against a set (``IN (VALUES ...)``) and stores a time (microseconds) or a boolean
(0 or 1). Only constant SQL text is ever assembled; every value travels as a bound parameter.
"""

from __future__ import annotations

__all__ = ["Params", "entry_where", "name_page", "node_where", "pk_page"]

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pyspire_sdk import sql_filters
from pyspire_sdk.plugins.datastore import EntryFilter, NodeFilter, Page
from pyspire_sdk.sql_filters import SqlParams
from pyspire_sdk.stored_records import integer_page_token, name_page_token, to_micros


def pk_page(page: Page | None) -> tuple[int, int]:
    """``(after_pk, limit)`` for a page over rows ordered by integer key; limit -1 is all."""
    page = page or Page()
    return integer_page_token(page.token), (page.size + 1 if page.size else -1)


def name_page(page: Page | None) -> tuple[str, int]:
    """``(after_name, limit)`` for a page over rows ordered by trust domain name."""
    page = page or Page()
    return name_page_token(page.token), (page.size + 1 if page.size else -1)


class Params(SqlParams):
    """Bound parameters of one statement, ``?`` each; times as microseconds, booleans as 0
    or 1."""

    everything = "1"

    def bind(self, value: Any) -> str:
        self.values.append(value)
        return "?"

    def member(self, columns: Sequence[str], rows: Sequence[tuple[str, ...]]) -> str:
        for row in rows:
            self.values.extend(row)
        if len(columns) == 1:
            return f"{columns[0]} IN ({', '.join('?' * len(rows))})"
        one = "(" + ", ".join("?" * len(columns)) + ")"
        return f"({', '.join(columns)}) IN (VALUES {', '.join([one] * len(rows))})"

    def moment(self, value: datetime) -> Any:
        return to_micros(value)

    def flag(self, column: str, value: bool) -> str:
        return f"{column} = {self.bind(int(value))}"


def entry_where(entry_filter: EntryFilter | None) -> tuple[str, list[Any]]:
    """``WHERE`` text over alias ``e`` and parameters for an entry filter (``"1"`` for none)."""
    params = Params()
    return sql_filters.entry_where(params, entry_filter), params.values


def node_where(node_filter: NodeFilter | None) -> tuple[str, list[Any]]:
    """``WHERE`` text over alias ``n`` and parameters for a node filter (``"1"`` for none)."""
    params = Params()
    return sql_filters.node_where(params, node_filter), params.values
