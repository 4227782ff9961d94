"""``pyspire-plugin new`` writes, for every plugin type, a package that installs with pip,
passes its own tests in pytest-asyncio's strict mode, is clean for ruff and strict mypy, and is
found by the kernel's catalog (``pyspire-server plugins``, ``pyspire-agent plugins``).

All nine packages share one temporary environment: one ``pip install --target``, one pytest
run, one mypy run and one listing per side.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from plugin_projects import PytestRun, environment, install, listed_plugins, run_pytest, script

from pyspire_sdk._scaffold.cli import main
from pyspire_sdk._scaffold.kinds import PLUGIN_TYPES, SCAFFOLD_KINDS
from pyspire_sdk._scaffold.naming import PluginNames

ROOT = Path(__file__).resolve().parents[2]
NAME = "demo"


@dataclass(frozen=True)
class Scaffolded:
    """Every type's package written below ``root`` (one folder per type), installed in
    ``site``."""

    root: Path
    site: Path
    names: dict[str, PluginNames]

    def project(self, plugin_type: str) -> Path:
        return self.root / plugin_type

    @property
    def projects(self) -> list[Path]:
        return [self.project(plugin_type) for plugin_type in self.names]


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Scaffolded:
    root = tmp_path_factory.mktemp("plugins")
    names: dict[str, PluginNames] = {}
    for plugin_type in PLUGIN_TYPES:
        target = root / plugin_type
        assert main(["new", "--type", plugin_type, "--name", NAME, "--dir", str(target)]) == 0
        names[plugin_type] = PluginNames(plugin_type, NAME)
    site = root / "site"
    install([root / plugin_type for plugin_type in names], site)
    return Scaffolded(root, site, names)


@pytest.fixture(scope="module")
def own_tests(scaffolded: Scaffolded) -> PytestRun:
    # One run for all packages; their pytest settings are alike, so any one's file serves.
    return run_pytest(
        [project / "tests" for project in scaffolded.projects],
        cwd=scaffolded.root,
        env=environment(scaffolded.site),
        config=scaffolded.project("datastore") / "pyproject.toml",
    )


def test_every_plugin_type_has_a_scaffold() -> None:
    assert tuple(SCAFFOLD_KINDS) == PLUGIN_TYPES
    assert len(PLUGIN_TYPES) == 9


@pytest.mark.parametrize("plugin_type", PLUGIN_TYPES)
def test_each_package_passes_its_own_tests_in_strict_mode(
    own_tests: PytestRun, plugin_type: str
) -> None:
    outcomes = own_tests.under(f"{plugin_type}.tests.")
    modules = {outcome.test.split(".")[2] for outcome in outcomes}
    assert modules == {f"test_{NAME}_{plugin_type}", f"test_{NAME}_{plugin_type}_package"}, (
        own_tests.output
    )
    failed = [outcome for outcome in outcomes if outcome.result not in ("passed", "skipped")]
    assert failed == [], own_tests.output
    assert sum(outcome.result == "passed" for outcome in outcomes) >= 5


def test_contract_suites_run_where_the_sdk_has_them(own_tests: PytestRun) -> None:
    for plugin_type, kind in SCAFFOLD_KINDS.items():
        contract = own_tests.under(f"{plugin_type}.tests.test_{NAME}_{plugin_type}.TestContract.")
        assert bool(contract) == bool(kind.contract), plugin_type
        assert all(outcome.result in ("passed", "skipped") for outcome in contract)


def test_the_packages_are_clean_for_ruff_and_strict_mypy(scaffolded: Scaffolded) -> None:
    packages = ", ".join(f'"{names.package}"' for names in scaffolded.names.values())
    ruff = str(Path(sys.executable).parent / "ruff")
    config = ["--config", str(ROOT / "pyproject.toml")]
    first_party = ["--config", f"lint.isort.known-first-party = [{packages}]"]
    for command in (
        [ruff, "check", *config, *first_party, str(scaffolded.root)],
        [ruff, "format", "--check", *config, str(scaffolded.root)],
        [
            str(Path(sys.executable).parent / "mypy"),
            "--strict",
            "--no-incremental",
            *(
                str(scaffolded.project(plugin_type) / "src" / names.package)
                for plugin_type, names in scaffolded.names.items()
            ),
        ],
    ):
        completed = subprocess.run(
            command, cwd=scaffolded.root, capture_output=True, text=True, timeout=300, check=False
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("side", ["server", "agent"])
def test_installed_packages_are_discovered_by_the_catalog(
    scaffolded: Scaffolded, side: str
) -> None:
    allow = ",".join(names.distribution for names in scaffolded.names.values())
    rows = listed_plugins(side, environment(scaffolded.site, PYSPIRE_PLUGINS_ALLOW=allow))
    expected = sorted(
        (plugin_type, NAME, names.distribution)
        for plugin_type, names in scaffolded.names.items()
        if side in SCAFFOLD_KINDS[plugin_type].sides
    )
    assert sorted(rows) == expected


def test_the_console_script_writes_a_package(tmp_path: Path) -> None:
    completed = subprocess.run(
        [script("pyspire-plugin"), "new", "--type", "notifier", "--name", "audit_log"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    project = tmp_path / "pyspire-notifier-audit-log"
    assert "pip install -e '.[testing]'" in completed.stdout
    assert (project / "pyproject.toml").is_file()
    assert (project / "src" / "pyspire_notifier_audit_log" / "notifier.py").is_file()
