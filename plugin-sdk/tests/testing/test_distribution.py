"""A distribution written by install_distribution is found through its entry points, as an
installed one is, and its modules are forgotten after the test."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

from pyspire_sdk.plugin import ENTRY_POINT_GROUP
from pyspire_sdk.testing import install_distribution


def test_an_installed_distribution_is_found_by_its_entry_points(
    plugin_site: Path, tmp_path: Path
) -> None:
    package = tmp_path / "sample_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text("ANSWER = 42\n")
    info = install_distribution(
        plugin_site,
        "pyspire-sample-plugins",
        {"sample": "sample_plugins.hooks", "single": "single_module"},
        modules={"single_module": "NAME = 'single'\n"},
        packages=[package],
        version="2.0",
    )
    assert info.name == "pyspire_sample_plugins-2.0.dist-info"
    distribution = importlib.metadata.distribution("pyspire-sample-plugins")
    assert distribution.version == "2.0"
    found = {
        entry_point.name: entry_point
        for entry_point in distribution.entry_points
        if entry_point.group == ENTRY_POINT_GROUP
    }
    assert found["sample"].load().ANSWER == 42
    assert found["single"].load().NAME == "single"
    assert "sample_plugins.hooks" in sys.modules


def test_modules_of_an_earlier_test_are_forgotten() -> None:
    assert "sample_plugins.hooks" not in sys.modules
    assert "single_module" not in sys.modules
