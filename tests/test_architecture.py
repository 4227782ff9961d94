"""The direction of dependencies in the workspace, checked on the source itself.

plugins and examples  ──►  plugin-sdk  ◄──  kernel

A plugin that imports the kernel, an SDK module that imports the kernel, or a kernel module that
imports a plugin by name would quietly break the promise that plugins are installable on their
own and that built-ins have no back door.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCES = sorted(ROOT.glob("plugins/*/src")) + sorted(ROOT.glob("examples/*/src"))
PLUGIN_DISTRIBUTIONS = sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml")) + sorted(
    p.parent for p in ROOT.glob("examples/*/pyproject.toml")
)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def top_package(module: str) -> str:
    return module.split(".", 1)[0]


def python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "gen" not in path.parts)


def violations(folder: Path, forbidden: set[str] | None, allowed_prefix: str = "") -> list[str]:
    found = []
    for path in python_files(folder):
        for line, module in imported_modules(path):
            package = top_package(module)
            bad = package in forbidden if forbidden is not None else False
            if allowed_prefix and package.startswith(allowed_prefix) and package != "pyspire_sdk":
                bad = True
            if bad:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def plugin_packages() -> set[str]:
    return {
        package.name
        for source in PLUGIN_SOURCES
        for package in source.iterdir()
        if package.is_dir() and (package / "__init__.py").exists()
    }


@pytest.mark.parametrize("distribution", PLUGIN_DISTRIBUTIONS, ids=lambda p: p.name)
def test_plugins_import_only_the_sdk_never_the_kernel(distribution: Path) -> None:
    """Every Python file of a plugin distribution (its code, its tests, its benchmarks), since a
    plugin's tests and benchmarks must run where only the SDK is installed."""
    assert violations(distribution, {"pyspire"}) == []


def test_sdk_does_not_import_the_kernel_or_a_plugin() -> None:
    forbidden = {"pyspire", *plugin_packages()}
    assert violations(ROOT / "plugin-sdk" / "src", forbidden) == []


def test_kernel_imports_no_plugin_by_name() -> None:
    assert violations(ROOT / "kernel" / "src", plugin_packages()) == []


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The scanner itself must catch an offending import, or the tests above prove nothing."""
    offending = tmp_path / "pkg" / "mod.py"
    offending.parent.mkdir()
    offending.write_text("import os\nfrom pyspire.catalog import discover\n")
    found = [module for _, module in imported_modules(offending)]
    assert "pyspire.catalog" in found
    assert top_package("pyspire.catalog") == "pyspire"


@pytest.mark.parametrize("source", PLUGIN_SOURCES, ids=lambda p: p.parent.name)
def test_plugin_distribution_declares_only_the_sdk_from_this_workspace(source: Path) -> None:
    import tomllib

    project = tomllib.loads((source.parent / "pyproject.toml").read_text())["project"]
    workspace = [dep for dep in project.get("dependencies", []) if dep.startswith("pyspire")]
    assert all(dep.startswith("pyspire-plugin-sdk") for dep in workspace), workspace
    entry_points = project.get("entry-points", {}).get("pyspire.plugins", {})
    assert entry_points, "a plugin must declare an entry point in group 'pyspire.plugins'"
