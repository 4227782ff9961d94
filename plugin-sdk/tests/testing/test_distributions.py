"""Distributions written on the fly are found as pip-installed ones are, in this process and in
a child process."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from pyspire_sdk.plugin import ENTRY_POINT_GROUP
from pyspire_sdk.testing.distributions import environment_with_path, install_distribution


def test_entry_points_and_package_modules_are_written(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = install_distribution(
        site,
        "pyspire-svidstore-demo",
        entry_points={"demo": "demo_pkg.plugin"},
        modules={"demo_pkg.plugin": "NAME = 'demo'\n"},
        version="2.1",
    )
    assert info.name == "pyspire_svidstore_demo-2.1.dist-info"
    (found,) = importlib.metadata.distributions(path=[str(site)])
    assert found.metadata["Name"] == "pyspire-svidstore-demo"
    assert found.version == "2.1"
    assert [(ep.group, ep.name, ep.value) for ep in found.entry_points] == [
        (ENTRY_POINT_GROUP, "demo", "demo_pkg.plugin")
    ]
    assert (site / "demo_pkg" / "__init__.py").exists()


def test_a_child_process_loads_the_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_distribution(
        site,
        "pyspire-demo",
        entry_points={"demo": "demo_module:NAME"},
        modules={"demo_module": "NAME = 'loaded from the site'\n"},
    )
    probe = (
        "import importlib.metadata as m\n"
        f"(ep,) = [e for e in m.entry_points(group={ENTRY_POINT_GROUP!r}) if e.name == 'demo']\n"
        "print(ep.load())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=environment_with_path(site, {"PYTHONPATH": "/nonexistent"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "loaded from the site"


def test_environment_keeps_the_existing_path_after_the_site(tmp_path: Path) -> None:
    environment = environment_with_path(tmp_path, {"PYTHONPATH": "/a", "HOME": "/h"})
    assert environment == {"PYTHONPATH": f"{tmp_path}:/a", "HOME": "/h"}
    assert environment_with_path(tmp_path, {})["PYTHONPATH"] == str(tmp_path)


def test_a_module_name_python_cannot_import_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'my-plugin' is not a module name"):
        install_distribution(tmp_path, "x", entry_points={}, modules={"my-plugin": ""})
