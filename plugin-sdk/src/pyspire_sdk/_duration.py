"""Durations written the way SPIRE operators write them: ``"1h30m"``, ``"90s"``, ``"24h"``.

A bare integer (or a string of ASCII digits) counts seconds. Units: ``ms``, ``s``, ``m``, ``h``,
``d``; each part is a decimal number (``"1.5h"``) and parts may repeat in any order, as Go's
``time.ParseDuration`` allows. Parsing is exact to the microsecond (the resolution of
:class:`~datetime.timedelta`) because parts are added as decimals, not floats. Durations are
never negative.
"""

from __future__ import annotations

__all__ = ["format_duration", "parse_duration"]

import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from pyspire_sdk.errors import InvalidArgumentError

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", re.ASCII)
_UNIT_MICROSECONDS = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}
_MAX_MICROSECONDS = int(timedelta.max / timedelta(microseconds=1))


def _from_microseconds(text: object, microseconds: int) -> timedelta:
    if microseconds > _MAX_MICROSECONDS:
        raise InvalidArgumentError(
            f"invalid duration {text!r}: longer than the largest supported ({timedelta.max.days}d)"
        )
    return timedelta(microseconds=microseconds)


def parse_duration(text: str | int) -> timedelta:
    """Parse ``"1h30m"``-style text (or a count of seconds) into a :class:`timedelta`.

    Raises :class:`InvalidArgumentError` naming the text when it is not a duration, is negative
    or is too large to represent.
    """
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise InvalidArgumentError(
            f"invalid duration {text!r}: expected text like '1h30m' or a number of seconds"
        )
    if isinstance(text, int):
        if text < 0:
            raise InvalidArgumentError(f"invalid duration {text}: must not be negative")
        return _from_microseconds(text, text * 1_000_000)
    cleaned = text.strip()
    if cleaned.isascii() and cleaned.isdigit():
        return _from_microseconds(text, int(cleaned) * 1_000_000)
    if cleaned.startswith("-"):
        raise InvalidArgumentError(f"invalid duration {text!r}: must not be negative")
    position = 0
    total = Decimal(0)
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        total += Decimal(match.group(1)) * _UNIT_MICROSECONDS[match.group(2)]
        position = match.end()
    if not cleaned or position != len(cleaned):
        raise InvalidArgumentError(
            f"invalid duration {text!r}: expected numbers with a unit (ms, s, m, h, d), "
            "e.g. '1h30m'"
        )
    microseconds = int(total.to_integral_value(rounding=ROUND_HALF_EVEN))
    return _from_microseconds(text, microseconds)


def format_duration(value: timedelta) -> str:
    """Format a :class:`timedelta` as the shortest ``1h30m``-style text that parses back.

    The result is exact to the millisecond (finer parts are rounded to the nearest
    millisecond); ``parse_duration(format_duration(d)) == d`` for every non-negative ``d``
    that is a whole number of milliseconds. A negative value, which :func:`parse_duration`
    rejects, is shown with a leading ``-`` so that it reads correctly in a log line.
    """
    total_us = value // timedelta(microseconds=1)
    total_ms = (abs(total_us) + 500) // 1000
    if total_ms == 0:
        return "0s"
    sign = "-" if total_us < 0 else ""
    remaining = total_ms
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    if remaining:
        parts.append(f"{remaining}ms")
    return sign + "".join(parts)
