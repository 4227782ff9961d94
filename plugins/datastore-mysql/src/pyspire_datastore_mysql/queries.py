"""Bound parameters as MySQL and MariaDB read them, for the SDK's filter SQL.

Every value travels as a ``%s`` parameter, in the order of the placeholders; sets travel as
row constructors, ``(a, b) IN ((%s, %s), ...)``, which MySQL and MariaDB both read. The
filters' meaning is :mod:`pyspire_sdk.sql_filters`'.
"""

from __future__ import annotations

__all__ = ["Params", "placeholders"]

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pyspire_sdk.sql_filters import SqlParams
from pyspire_sdk.stored_records import to_micros


def placeholders(count: int, width: int = 1) -> str:
    """``count`` comma-separated placeholders, each a row of ``width`` when ``width`` > 1."""
    one = "%s" if width == 1 else "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([one] * count)


class Params(SqlParams):
    """Bound parameters of one statement, ``%s`` each; times as microseconds."""

    def bind(self, value: Any) -> str:
        self.values.append(value)
        return "%s"

    def member(self, columns: Sequence[str], rows: Sequence[tuple[str, ...]]) -> str:
        for row in rows:
            self.values.extend(row)
        if len(columns) == 1:
            return f"{columns[0]} IN ({placeholders(len(rows))})"
        return f"({', '.join(columns)}) IN ({placeholders(len(rows), len(columns))})"

    def moment(self, value: datetime) -> Any:
        return to_micros(value)
