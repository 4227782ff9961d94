"""From the TOML ``plugins`` table to a checked plan, without instantiating anything.

The convention is the same for single plugins and chains: ``[<side>.plugins.<type>.<name>]``
is a table holding that plugin's settings (an empty table takes every default). For a chain
type the document order of its tables is the chain order; ``tomllib`` keeps insertion order, so
the plan keeps it too::

    [agent.plugins.workload_attestor.unix]
    [agent.plugins.workload_attestor.environ]
    names = ["APP"]

:func:`plan_plugins` reports *every* problem at once in one
:class:`~pyspire_sdk.errors.ConfigError`, each with its key path: unknown types, plugins that
are not installed (and the distribution that would provide them), settings a plugin rejects,
and too few or too many plugins of a type. A name that looks like a typo of an installed plugin
of the same type gets a "did you mean" instead of a package to install.
"""

from __future__ import annotations

__all__ = ["CatalogPlan", "PlannedPlugin", "plan_plugins"]

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.catalog.discovery import DiscoveredPlugin, Discovery
from pyspire.catalog.kinds import AnyKind, Side, kinds_for
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, ConfigIssue

_TYPO_CUTOFF = 0.6
"""How alike (difflib's ratio) a configured name and an installed one must be for the error to
ask "did you mean" instead of suggesting a distribution to install: ``dsik`` and ``disk``
score 0.75, ``vault`` and ``disk`` 0."""


@dataclass(frozen=True)
class PlannedPlugin:
    """One plugin the configuration asks for, with its validated configuration."""

    kind: AnyKind
    name: str
    config: Any
    discovered: DiscoveredPlugin
    path: str

    @property
    def distribution(self) -> str:
        """The distribution that provides the plugin."""
        return self.discovered.distribution


@dataclass(frozen=True)
class CatalogPlan:
    """Every plugin one side will run, kinds in configuration order, chains in document order.

    A plan satisfies every kind's arity and every plugin's configuration parsed; building one
    is the whole of ``validate``.
    """

    side: Side
    plugins: tuple[PlannedPlugin, ...]

    def of(self, kind: AnyKind | str) -> tuple[PlannedPlugin, ...]:
        """The planned plugins of ``kind`` (a kind or its TOML name), in chain order."""
        resolved = resolve_kind(self.side, kind)
        return tuple(plugin for plugin in self.plugins if plugin.kind == resolved)


def resolve_kind(side: Side, kind: AnyKind | str) -> AnyKind:
    """The kind of ``side`` that ``kind`` names; raises ``LookupError`` for another side's."""
    for candidate in kinds_for(side):
        if candidate == kind or candidate.toml_name == kind:
            return candidate
    raise LookupError(f"{kind} is not a plugin type of the {side}")


def _found(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'float'} {value}"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _close_names(name: str, names: list[str]) -> list[str]:
    """The installed names ``name`` is probably a typo of, best first (``dsik`` → ``disk``)."""
    return difflib.get_close_matches(name, names, n=3, cutoff=_TYPO_CUTOFF)


def _not_installed(kind: AnyKind, name: str, discovery: Discovery) -> str:
    names = [plugin.name for plugin in discovery.plugins(kind)]
    installed = ", ".join(names) or "none"
    reason = discovery.exclusion(kind, name)
    if reason is not None:
        return f'no {kind.toml_name} plugin named "{name}" is loaded: {reason}; loaded: {installed}'
    close = _close_names(name, names)
    if close:
        guesses = " or ".join(f'"{guess}"' for guess in close)
        return (
            f'no {kind.toml_name} plugin named "{name}" is installed; did you mean {guesses}? '
            f"installed: {installed}"
        )
    return (
        f'no {kind.toml_name} plugin named "{name}" is installed; installed: {installed}; '
        f"install {kind.suggested_distribution(name)} to get it"
    )


def _count_issue(kind: AnyKind, names: list[str]) -> ConfigIssue | None:
    if kind.admits(len(names)):
        return None
    found = f"found {len(names)}"
    if names:
        found += ": " + ", ".join(names)
    return ConfigIssue(kind.table_path, f"{kind.arity_phrase()}, {found}")


def plan_plugins(
    side: Side,
    plugins_table: Mapping[str, Any] | None,
    discovery: Discovery,
    *,
    path: str | None = None,
) -> CatalogPlan:
    """Check the ``plugins`` table of ``side`` against the installed plugins.

    ``path`` is the table's key path in the document (default ``<side>.plugins``). Nothing is
    created or configured. Raises :class:`ConfigError` carrying every issue found.
    """
    side = Side(side)
    base = path if path is not None else f"{side}.plugins"
    kinds = kinds_for(side)
    by_name = {kind.toml_name: kind for kind in kinds}
    issues: list[ConfigIssue] = []
    names: dict[AnyKind, list[str]] = {kind: [] for kind in kinds}
    planned: dict[AnyKind, list[PlannedPlugin]] = {kind: [] for kind in kinds}

    for type_name, type_table in _table(plugins_table, base, issues).items():
        type_path = f"{base}.{type_name}"
        kind = by_name.get(type_name)
        if kind is None:
            known = ", ".join(sorted(by_name))
            issues.append(
                ConfigIssue(
                    type_path,
                    f'unknown plugin type "{type_name}"; known types for the {side}: {known}',
                )
            )
            continue
        if not isinstance(type_table, Mapping):
            issues.append(ConfigIssue(type_path, _not_a_type_table(type_path, type_table)))
            continue
        for name, settings in type_table.items():
            names[kind].append(name)
            plugin = _plan_one(kind, name, settings, f"{type_path}.{name}", discovery, issues)
            if plugin is not None:
                planned[kind].append(plugin)

    issues += [issue for kind in kinds if (issue := _count_issue(kind, names[kind]))]
    if issues:
        raise ConfigError(issues)
    return CatalogPlan(
        side=side,
        plugins=tuple(plugin for kind in kinds for plugin in planned[kind]),
    )


def _table(raw: object, path: str, issues: list[ConfigIssue]) -> Mapping[str, Any]:
    """The plugins table, whatever the document holds there (an issue when not a table)."""
    if isinstance(raw, Mapping):
        return raw
    if raw is not None:
        issues.append(ConfigIssue(path, f"expected a table, found {_found(raw)}"))
    return {}


def _not_a_type_table(type_path: str, value: object) -> str:
    type_name = type_path.rsplit(".", 1)[-1]
    hint = f"; write one table per plugin: [{type_path}.<name>]" if isinstance(value, list) else ""
    return f"expected a table of {type_name} plugins, found {_found(value)}{hint}"


def _plan_one(
    kind: AnyKind,
    name: str,
    settings: object,
    path: str,
    discovery: Discovery,
    issues: list[ConfigIssue],
) -> PlannedPlugin | None:
    """One plugin's plan entry, or ``None`` with the reasons added to ``issues``."""
    if not isinstance(settings, Mapping):
        issues.append(
            ConfigIssue(
                path,
                "expected a table with the plugin's settings (empty for the defaults), "
                f"found {_found(settings)}",
            )
        )
        return None
    discovered = discovery.get(kind, name)
    if discovered is None:
        issues.append(ConfigIssue(path, _not_installed(kind, name, discovery)))
        return None
    try:
        config = load_config(discovered.registration.config_type, settings, path=path)
    except ConfigError as error:
        issues.extend(error.issues)
        return None
    except (TypeError, NameError) as error:  # the plugin declares a field we cannot load
        issues.append(
            ConfigIssue(
                path,
                f'{kind.toml_name} plugin "{name}" of {discovered.origin} declares a '
                f"configuration that cannot be loaded: {error}",
            )
        )
        return None
    return PlannedPlugin(kind=kind, name=name, config=config, discovered=discovered, path=path)
