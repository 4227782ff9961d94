"""Checks that a plugin's README documents its settings exactly as they are declared.

A README table written by hand drifts from the configuration class: a key renamed, a default
changed, a description reworded. The table is made by :func:`pyspire_sdk.config.settings_table`
from the declaration; this check fails naming every row of it that the README lacks, so the
README is fixed by pasting the table again.
"""

from __future__ import annotations

__all__ = ["assert_readme_documents"]

from pathlib import Path
from typing import Any

from pyspire_sdk.config import settings_table

_HEADER_LINES = 2
"""The header and the separator line of a settings table, which carry no setting."""


def assert_readme_documents(readme: Path, *config_types: type[Any]) -> None:
    """Raise ``AssertionError`` listing the settings-table rows of ``config_types`` that
    ``readme`` does not hold, each exactly as :func:`~pyspire_sdk.config.settings_table`
    writes it."""
    lines = set(readme.read_text(encoding="utf-8").splitlines())
    missing = [
        row
        for config_type in config_types
        for row in settings_table(config_type).splitlines()[_HEADER_LINES:]
        if row not in lines
    ]
    if missing:
        raise AssertionError(f"{readme} lacks these settings rows:\n" + "\n".join(missing))
