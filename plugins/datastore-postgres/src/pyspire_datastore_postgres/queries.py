# ruff: noqa: S608 - SQL text is assembled from constants only; every value is a bound parameter
"""Bound parameters as PostgreSQL reads them, for the SDK's filter SQL.

Every value travels as a numbered parameter (``$1``...); a set travels as one array parameter
per column, whatever its size. The filters' meaning is :mod:`pyspire_sdk.sql_filters`'.
"""

from __future__ import annotations

__all__ = ["Params"]

from collections.abc import Sequence
from typing import Any

from pyspire_sdk.sql_filters import SqlParams


class Params(SqlParams):
    """Bound parameters of one statement; :meth:`bind` returns the placeholder of a value."""

    def bind(self, value: Any) -> str:
        """Bind ``value``; its placeholder (``$n``)."""
        self.values.append(value)
        return f"${len(self.values)}"

    def __init__(self, *values: Any) -> None:
        self._arrays: dict[tuple[tuple[tuple[str, ...], ...], int], list[str]] = {}
        super().__init__(*values)

    def member(self, columns: Sequence[str], rows: Sequence[tuple[str, ...]]) -> str:
        """The set travels once, as one array per column, however often it is tested."""
        key = (tuple(rows), len(columns))
        arrays = self._arrays.get(key)
        if arrays is None:
            arrays = [self.bind([row[i] for row in rows]) for i in range(len(columns))]
            self._arrays[key] = arrays
        if len(columns) == 1:
            return f"{columns[0]} = ANY({arrays[0]}::text[])"
        unnested = ", ".join(f"{array}::text[]" for array in arrays)
        return f"({', '.join(columns)}) IN (SELECT * FROM unnest({unnested}))"
