"""Render a plugin type's templates into a new package directory, in one step.

Everything is written into a temporary directory beside the target and renamed into place at
the end, so a failure (a template error, a full disk) leaves no half-written package behind.
"""

from __future__ import annotations

__all__ = ["ScaffoldError", "write_plugin_package"]

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from pyspire_sdk._scaffold.kinds import SCAFFOLD_KINDS, ScaffoldKind
from pyspire_sdk._scaffold.naming import PluginNames
from pyspire_sdk.config import settings_table

_SUFFIX = ".tmpl"
_SDK_DISTRIBUTION = "pyspire-plugin-sdk"


class ScaffoldError(Exception):
    """The package cannot be written: the message says why."""


def _templates(folder: Traversable, relative: str = "") -> Iterator[tuple[str, Traversable]]:
    """``(relative path, template)`` for every template below ``folder``."""
    for item in sorted(folder.iterdir(), key=lambda item: item.name):
        path = f"{relative}{item.name}"
        if item.is_dir():
            yield from _templates(item, path + "/")
        elif item.name.endswith(_SUFFIX):
            yield path[: -len(_SUFFIX)], item


def _output_path(relative: str, names: PluginNames) -> str | None:
    """Where a template's output goes in the package; ``None`` for text used elsewhere."""
    if relative == "README.about.md":
        return None
    if relative.startswith("src/"):
        return f"src/{names.package}/{relative[4:]}"
    if relative == "tests/test_contract.py":
        return f"tests/test_{names.module}.py"
    if relative == "tests/test_package.py":
        return f"tests/test_{names.module}_package.py"
    return relative


def _sdk_version() -> str:
    try:
        return importlib.metadata.version(_SDK_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ScaffoldError(f"{_SDK_DISTRIBUTION} is not installed as a distribution") from None


def _settings_section(kind: ScaffoldKind, names: PluginNames, config_file: Path) -> str:
    """The README's settings tables, made from the configuration classes just written."""
    module_name = f"_pyspire_scaffold_config_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, config_file)
    if spec is None or spec.loader is None:
        raise ScaffoldError(f"cannot load {config_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and type hints look their module up here
    try:
        spec.loader.exec_module(module)
        sections: list[str] = []
        for suffix, heading in kind.configs:
            table = settings_table(getattr(module, names.prefix + suffix))
            sections.append(f"### {heading}\n\n{table}" if heading else table)
    finally:
        del sys.modules[module_name]
    return "\n\n".join(sections)


def _check_sentence(kind: ScaffoldKind) -> str:
    commands = [f"`pyspire-{side} plugins`" for side in kind.sides]
    validates = [f"`pyspire-{side} validate`" for side in kind.sides]
    return (
        f"{' and '.join(commands)} list{'s' if len(commands) == 1 else ''} it once installed; "
        f"{' and '.join(validates)} check{'s' if len(validates) == 1 else ''} its settings."
    )


def _tests_sentence(kind: ScaffoldKind) -> str:
    if kind.contract:
        return (
            f"The tests run the SDK's contract suite `{kind.contract}`, then this plugin's "
            "own cases."
        )
    return (
        f"The SDK has no contract suite for {kind.title}s yet, so the tests check the promises "
        f"of the `{kind.plugin_type}` interface themselves."
    )


def _render(template: Traversable, values: Mapping[str, str]) -> str:
    try:
        return Template(template.read_text(encoding="utf-8")).substitute(values)
    except (KeyError, ValueError) as error:  # a template fault, not the user's
        raise ScaffoldError(f"template {template.name} is broken: {error}") from None


def write_plugin_package(plugin_type: str, name: str, target: Path) -> PluginNames:
    """Write a new plugin package of ``plugin_type`` named ``name`` into the directory
    ``target``, which must not exist or be empty. Returns the package's names.

    Raises ``ValueError`` for an unknown type or an unusable name and :class:`ScaffoldError`
    when the package cannot be written; nothing is left behind in either case.
    """
    kind = SCAFFOLD_KINDS.get(plugin_type)
    if kind is None:
        raise ValueError(
            f"unknown plugin type {plugin_type!r}; known types: {', '.join(SCAFFOLD_KINDS)}"
        )
    names = PluginNames(plugin_type, name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(f"{target} already exists and is not an empty directory")
    parent = target.resolve().parent
    if not parent.is_dir():
        raise ScaffoldError(f"{parent} is not a directory")
    sdk_version = _sdk_version()
    values = {
        "name": names.name,
        "type": plugin_type,
        "title": kind.title,
        "distribution": names.distribution,
        "package": names.package,
        "Prefix": names.prefix,
        "sdk_version": sdk_version,
        "dependencies": ", ".join(
            f'"{requirement}"'
            for requirement in (f"{_SDK_DISTRIBUTION}>={sdk_version}", *kind.dependencies)
        ),
        "check": _check_sentence(kind),
        "tests": _tests_sentence(kind),
    }
    root = files("pyspire_sdk._scaffold") / "templates"
    templates = [*_templates(root / "common"), *_templates(root / plugin_type)]
    staging = Path(tempfile.mkdtemp(prefix=f".{names.distribution}.", dir=parent))
    try:
        readme: Traversable | None = None
        for relative, template in templates:
            if relative == "README.md":
                readme = template
                continue
            output = _output_path(relative, names)
            text = _render(template, values)
            if output is None:
                values["about"] = text.strip()
                continue
            path = staging / output
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if readme is None:
            raise ScaffoldError("the README template is missing")
        values["settings"] = _settings_section(
            kind, names, staging / "src" / names.package / "config.py"
        )
        (staging / "README.md").write_text(_render(readme, values), encoding="utf-8")
        os.chmod(staging, 0o755)  # noqa: S103 - a source tree, readable like any other
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return names
