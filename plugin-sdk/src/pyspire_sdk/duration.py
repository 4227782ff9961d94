"""Durations written the way SPIRE operators write them: ``"1h30m"``, ``"90s"``, ``"24h"``.

A bare integer counts seconds. Units: ``ms``, ``s``, ``m``, ``h``, ``d``. Durations are never
negative.
"""

from __future__ import annotations

__all__ = ["format_duration", "parse_duration"]

import re
from datetime import timedelta

from pyspire_sdk.errors import InvalidArgumentError

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | int) -> timedelta:
    """Parse ``"1h30m"``-style text (or a count of seconds) into a :class:`timedelta`.

    Raises :class:`InvalidArgumentError` naming the text when it is not a duration.
    """
    if isinstance(text, bool):
        raise InvalidArgumentError(f"invalid duration {text!r}: expected text like '1h30m'")
    if isinstance(text, int):
        if text < 0:
            raise InvalidArgumentError(f"invalid duration {text}: must not be negative")
        return timedelta(seconds=text)
    cleaned = text.strip()
    if cleaned.isdigit():
        return timedelta(seconds=int(cleaned))
    position = 0
    total = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not cleaned or position != len(cleaned):
        raise InvalidArgumentError(
            f"invalid duration {text!r}: expected a number with a unit (ms, s, m, h, d), "
            "e.g. '1h30m'"
        )
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """Format a :class:`timedelta` as the shortest ``1h30m``-style text that parses back."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    sign = "-" if total_ms < 0 else ""
    remaining = abs(total_ms)
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    if remaining:
        parts.append(f"{remaining}ms")
    return sign + "".join(parts)
