"""Durations: parsing operator text and formatting it back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyspire_sdk._duration import format_duration, parse_duration
from pyspire_sdk.errors import InvalidArgumentError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("24h", timedelta(hours=24)),
        ("2d", timedelta(days=2)),
        ("250ms", timedelta(milliseconds=250)),
        ("1m1ms", timedelta(minutes=1, milliseconds=1)),
        ("1.5h", timedelta(minutes=90)),
        ("0.1s", timedelta(milliseconds=100)),
        ("0.0000015s", timedelta(microseconds=2)),  # rounded half to even
        ("1s1h", timedelta(hours=1, seconds=1)),  # any order, as Go allows
        ("0s", timedelta(0)),
        ("0", timedelta(0)),
        ("1", timedelta(seconds=1)),
        ("3600", timedelta(hours=1)),
        (" 5m ", timedelta(minutes=5)),
        (3600, timedelta(hours=1)),
        (0, timedelta(0)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
    ],
)
def test_parse_accepts(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_parse_is_exact_where_floats_would_drift() -> None:
    assert parse_duration("10000d0.001s") == timedelta(days=10000, milliseconds=1)
    assert parse_duration("0.1s0.2s") == timedelta(milliseconds=300)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected numbers with a unit"),
        ("   ", "expected numbers with a unit"),
        ("h", "expected numbers with a unit"),
        ("1x", "expected numbers with a unit"),
        ("1h 30m", "expected numbers with a unit"),
        ("1.h", "expected numbers with a unit"),
        (".5h", "expected numbers with a unit"),
        ("1.5.5s", "expected numbers with a unit"),
        ("1hh", "expected numbers with a unit"),
        ("-5s", "must not be negative"),
        ("-5", "must not be negative"),
        (-1, "must not be negative"),
        ("\u00b2", "expected numbers with a unit"),  # superscript two: isdigit() but not ASCII
        ("\u0661\u0662s", "expected numbers with a unit"),  # Arabic-Indic digits
        ("999999999999d", "longer than the largest supported"),
        (10**18, "longer than the largest supported"),
    ],
)
def test_parse_rejects(text: str | int, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match=reason) as raised:
        parse_duration(text)
    assert repr(text) in str(raised.value) or str(text) in str(raised.value)


@pytest.mark.parametrize("value", [True, 1.5, None, b"1h"])
def test_parse_rejects_other_types(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1), "1d"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(microseconds=400), "0s"),
        (timedelta(microseconds=500), "1ms"),
        (timedelta(minutes=-5), "-5m"),
    ],
)
def test_format(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(milliseconds=st.integers(min_value=0, max_value=10**13))
def test_property_format_parses_back(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    text = format_duration(value)
    assert parse_duration(text) == value
    assert " " not in text


@given(seconds=st.integers(min_value=0, max_value=10**9))
def test_property_integer_seconds_and_digit_text_agree(seconds: int) -> None:
    assert parse_duration(seconds) == parse_duration(str(seconds)) == timedelta(seconds=seconds)
