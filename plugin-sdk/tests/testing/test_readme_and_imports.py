from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pyspire_sdk.config import setting, settings_table
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.readme import assert_readme_documents


@dataclass(frozen=True, kw_only=True)
class Settings:
    retries: int = setting(3, description="how often to try")
    timeout: int = setting(5, description="seconds per try")


def test_a_readme_with_the_generated_table_passes(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# plugin\n\n{settings_table(Settings)}\n")
    assert_readme_documents(readme, Settings)


def test_a_readme_that_drifted_fails_naming_each_row(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    drifted = settings_table(Settings).replace("| 5 |", "| 10 |")
    readme.write_text(drifted)
    with pytest.raises(AssertionError) as failed:
        assert_readme_documents(readme, Settings)
    assert "| `timeout` | an integer | no | 5 | seconds per try |" in str(failed.value)
    assert "retries" not in str(failed.value)


def test_imports_are_seen_from_a_fresh_interpreter() -> None:
    loaded = top_level_modules_imported_by("import json")
    assert "json" in loaded
    assert "pytest" not in loaded
