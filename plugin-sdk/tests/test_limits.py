"""Limits on record contents: what counts as a control character, and the documented table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyspire_sdk import limits

CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("plain", None),
        ("", None),
        ("Grüße aus 東京 🚀", None),
        ("no\u00a0break space", None),
        ("line\nfeed", 4),
        ("\x00", 0),
        ("bell\x07", 4),
        ("esc\x1b[2J", 3),
        ("del\x7f", 3),
        ("c1\x85", 2),
        ("rtl\u202eoverride", 3),
        ("zero\u200bwidth", 4),
        ("line\u2028separator", 4),
        ("para\u2029separator", 4),
        ("lone\ud800", 4),
        ("ok then\ttab", 7),
    ],
)
def test_first_control_character(text: str, position: int | None) -> None:
    assert limits.first_control_character(text) == position


def test_entry_id_characters_are_spires() -> None:
    assert "".join(sorted(limits.ENTRY_ID_CHARACTERS)) == (
        "-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
    )


def test_every_limit_is_documented_with_its_value() -> None:
    documented = dict(
        re.findall(r"^\| `(MAX_[A-Z_]+)` \| (\d+)\b", CONTRIBUTING.read_text(), re.MULTILINE)
    )
    declared = {name: getattr(limits, name) for name in limits.__all__ if name.startswith("MAX_")}
    assert {name: int(value) for name, value in documented.items()} == declared
