"""Finding installed plugins: entry points in, typed registrations out.

Discovery is not calling. Each distribution's entry points in the group ``pyspire.plugins`` are
imported and registered into one :class:`pluggy.PluginManager`; then the synchronous hook of each
plugin type is called once per registered plugin, so every registration can be traced back to
the entry point and distribution that offered it. Nothing is instantiated or configured here.

Everything that goes wrong is collected and raised together as :class:`PluginLoadError`, each
problem naming the entry point and distribution at fault: a module that fails to import, a hook
that raises or returns something other than a list of
:class:`~pyspire_sdk.plugin.PluginRegistration`, a hook implementation pluggy does not know, two
distributions offering the same plugin. A process therefore refuses to start with a broken
plugin installed; the operator can keep one out with ``PYSPIRE_PLUGINS_BLOCK`` (see
:mod:`pyspire.catalog.filters`).
"""

from __future__ import annotations

__all__ = [
    "DiscoveredPlugin",
    "Discovery",
    "PluginLoadError",
]

import dataclasses
import importlib.metadata
import typing
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy
import structlog

from pyspire.catalog.filters import PluginFilter, normalize_distribution
from pyspire.catalog.kinds import ALL_KINDS, AnyKind
from pyspire_sdk.errors import PluginError
from pyspire_sdk.hookspecs import add_hookspecs
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, PROJECT_NAME, PluginRegistration

_log = structlog.get_logger("pyspire.catalog")

_HOOK_NAMES: tuple[str, ...] = tuple(dict.fromkeys(kind.hook_name for kind in ALL_KINDS))


class PluginLoadError(PluginError):
    """One or more installed plugins cannot be loaded; ``problems`` lists each, by name."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class DiscoveredPlugin:
    """One plugin an installed distribution offers for one kind.

    ``entry_point`` is written as in ``pyproject.toml`` (``environ = "pkg.plugin"`` shows as
    ``environ = pkg.plugin``); for plugins discovered from in-process modules it and
    ``distribution`` are the module's name and ``version`` is empty.
    """

    kind: AnyKind
    name: str
    registration: PluginRegistration[Any, Any]
    distribution: str
    version: str
    entry_point: str

    @property
    def origin(self) -> str:
        """The distribution and its version, as error messages show them."""
        return f"{self.distribution} {self.version}" if self.version else self.distribution


@dataclass(frozen=True)
class _Source:
    """Something to import and register: one entry point, or one in-process module."""

    entry_point: str
    distribution: str
    version: str
    load: Callable[[], object]

    def describe(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f'entry point "{self.entry_point}" of distribution {self.distribution}{version}'


def _returning(value: object) -> Callable[[], object]:
    """A loader for an object that is already in memory."""

    def load() -> object:
        return value

    return load


def _hook_label(hook_name: str) -> str:
    """How messages name the plugin type of a hook (``server node_attestor`` when the same TOML
    type has one hook per side)."""
    kinds = [kind for kind in ALL_KINDS if kind.hook_name == hook_name]
    toml_name = kinds[0].toml_name
    shared = {kind.hook_name for kind in ALL_KINDS if kind.toml_name == toml_name} - {hook_name}
    sides = {kind.side for kind in kinds}
    if shared and len(sides) == 1:
        return f"{next(iter(sides))} {toml_name}"
    return toml_name


def _check_registration(item: object) -> str | None:
    """Why ``item`` is not a usable registration, or ``None``."""
    if not isinstance(item, PluginRegistration):
        return f"returned {type(item).__name__} where a PluginRegistration was expected"
    config_type = item.config_type
    if not (isinstance(config_type, type) and dataclasses.is_dataclass(config_type)):
        return f'plugin "{item.name}": config_type {config_type!r} is not a dataclass'
    try:
        typing.get_type_hints(config_type)
    except Exception as error:  # an unresolvable annotation is the plugin's bug
        return (
            f'plugin "{item.name}": config_type {config_type.__name__} has annotations that '
            f"cannot be resolved: {type(error).__name__}: {error}"
        )
    factory: object = item.factory
    if not callable(factory):
        return f'plugin "{item.name}": factory is not callable'
    return None


class Discovery:
    """The plugins installed for this process, by kind, after allow and block lists.

    Build one with :meth:`load` (entry points of installed distributions) or
    :meth:`from_modules` (in-process modules, for tests). The constructor combines already
    discovered plugins (``Discovery([*first, *second])``) and refuses a kind and name given
    twice, like discovery itself.
    """

    def __init__(
        self,
        plugins: Iterable[DiscoveredPlugin],
        *,
        excluded_distributions: dict[str, str] | None = None,
        excluded_plugins: dict[tuple[str, str], str] | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
    ) -> None:
        self._by_kind: dict[AnyKind, dict[str, DiscoveredPlugin]] = defaultdict(dict)
        for plugin in plugins:
            known = self._by_kind[plugin.kind].get(plugin.name)
            if known is not None:
                raise PluginLoadError(
                    [
                        f'{plugin.kind.toml_name} plugin "{plugin.name}" is provided by both '
                        f"{known.origin} and {plugin.origin}"
                    ]
                )
            self._by_kind[plugin.kind][plugin.name] = plugin
        self._excluded_distributions = dict(excluded_distributions or {})
        self._excluded_plugins = dict(excluded_plugins or {})
        self.plugin_manager = plugin_manager

    @classmethod
    def load(
        cls,
        *,
        plugin_filter: PluginFilter | None = None,
        path: Sequence[str] | None = None,
    ) -> Discovery:
        """Discover the plugins of every installed distribution with ``pyspire.plugins`` entry
        points, on ``sys.path`` or on ``path`` when given.

        ``plugin_filter`` defaults to the one ``PYSPIRE_PLUGINS_ALLOW`` and
        ``PYSPIRE_PLUGINS_BLOCK`` describe. Raises :class:`PluginLoadError` listing every
        plugin that cannot be loaded.
        """
        active = PluginFilter.from_environ() if plugin_filter is None else plugin_filter
        distributions = (
            importlib.metadata.distributions()
            if path is None
            else importlib.metadata.distributions(path=list(path))
        )
        sources: list[_Source] = []
        excluded: dict[str, str] = {}
        seen: set[str] = set()
        for distribution in distributions:
            name = distribution.metadata["Name"]
            if not name:
                continue
            normalized = normalize_distribution(name)
            if normalized in seen:  # shadowed by an earlier entry of the search path
                continue
            seen.add(normalized)
            entry_points = [
                entry_point
                for entry_point in distribution.entry_points
                if entry_point.group == ENTRY_POINT_GROUP
            ]
            if not entry_points:
                continue
            reason = active.distribution_exclusion(name)
            if reason is not None:
                excluded[normalized] = reason
                _log.debug("plugin distribution skipped", distribution=name, reason=reason)
                continue
            for entry_point in entry_points:
                sources.append(
                    _Source(
                        entry_point=f"{entry_point.name} = {entry_point.value}",
                        distribution=name,
                        version=distribution.version,
                        load=entry_point.load,
                    )
                )
        return cls._discover(sources, active, excluded)

    @classmethod
    def from_modules(
        cls,
        *modules: ModuleType | object,
        plugin_filter: PluginFilter | None = None,
    ) -> Discovery:
        """Discover the plugins of in-process modules (or objects) with hook implementations,
        each standing in for a distribution named after the module. No entry point is read
        and no environment variable is consulted unless ``plugin_filter`` says so."""
        active = PluginFilter() if plugin_filter is None else plugin_filter
        sources: list[_Source] = []
        excluded: dict[str, str] = {}
        for module in modules:
            name = getattr(module, "__name__", None) or type(module).__name__
            reason = active.distribution_exclusion(name)
            if reason is not None:
                excluded[normalize_distribution(name)] = reason
                continue
            sources.append(
                _Source(
                    entry_point=name,
                    distribution=name,
                    version="",
                    load=_returning(module),
                )
            )
        return cls._discover(sources, active, excluded)

    @classmethod
    def _discover(
        cls,
        sources: Sequence[_Source],
        plugin_filter: PluginFilter,
        excluded_distributions: dict[str, str],
    ) -> Discovery:
        manager = pluggy.PluginManager(PROJECT_NAME)
        add_hookspecs(manager)
        problems: list[str] = []
        registered = _register(manager, sources, problems)
        excluded_plugins: dict[tuple[str, str], str] = {}
        offers = {
            hook_name: _offers(
                manager, hook_name, registered, plugin_filter, excluded_plugins, problems
            )
            for hook_name in _HOOK_NAMES
        }
        problems += _duplicates(offers)
        if problems:
            raise PluginLoadError(problems)
        discovered = [
            DiscoveredPlugin(
                kind=kind,
                name=name,
                registration=providers[0][1],
                distribution=providers[0][0].distribution,
                version=providers[0][0].version,
                entry_point=providers[0][0].entry_point,
            )
            for kind in ALL_KINDS
            for name, providers in sorted(offers[kind.hook_name].items())
        ]
        return cls(
            discovered,
            excluded_distributions=excluded_distributions,
            excluded_plugins=excluded_plugins,
            plugin_manager=manager,
        )

    def plugins(self, kind: AnyKind) -> tuple[DiscoveredPlugin, ...]:
        """The plugins installed for ``kind``, sorted by name."""
        found = self._by_kind.get(kind, {})
        return tuple(found[name] for name in sorted(found))

    def get(self, kind: AnyKind, name: str) -> DiscoveredPlugin | None:
        """The plugin of ``kind`` called ``name``, or ``None`` when none is loaded."""
        return self._by_kind.get(kind, {}).get(name)

    def exclusion(self, kind: AnyKind, name: str) -> str | None:
        """Why a plugin of ``kind`` called ``name`` was left out, when it was: its
        registration was filtered, or its conventionally named distribution was not imported."""
        reason = self._excluded_plugins.get((kind.toml_name, name))
        if reason is not None:
            return f"it is {reason}"
        distribution = normalize_distribution(kind.suggested_distribution(name))
        reason = self._excluded_distributions.get(distribution)
        if reason is not None:
            return f"distribution {distribution} is installed but {reason}"
        return None

    def __iter__(self) -> Iterator[DiscoveredPlugin]:
        for kind in ALL_KINDS:
            yield from self.plugins(kind)


_Offer = tuple[_Source, PluginRegistration[Any, Any]]


def _register(
    manager: pluggy.PluginManager, sources: Sequence[_Source], problems: list[str]
) -> list[tuple[_Source, object]]:
    """Import and register every source's module; a module that fails to import, to register
    or that implements a hook nobody knows is named in ``problems`` and left out."""
    registered: list[tuple[_Source, object]] = []
    for source in sources:
        try:
            plugin = source.load()
        except Exception as error:  # a broken plugin must be named, not crash discovery
            problems.append(
                f"{source.describe()} cannot be imported: {type(error).__name__}: {error}"
            )
            continue
        if manager.is_registered(plugin):  # two entry points naming the same module
            continue
        try:
            manager.register(plugin, name=f"{source.distribution}:{source.entry_point}")
        except Exception as error:
            problems.append(
                f"{source.describe()} is not a valid plugin: {type(error).__name__}: {error}"
            )
            continue
        unknown = sorted(
            caller.name
            for caller in manager.get_hookcallers(plugin) or []
            if caller.name not in _HOOK_NAMES
        )
        if unknown:
            manager.unregister(plugin)
            problems.append(
                f"{source.describe()} implements unknown hook {', '.join(unknown)}; "
                f"known hooks: {', '.join(sorted(_HOOK_NAMES))}"
            )
            continue
        registered.append((source, plugin))
    return registered


def _offers(
    manager: pluggy.PluginManager,
    hook_name: str,
    registered: list[tuple[_Source, object]],
    plugin_filter: PluginFilter,
    excluded_plugins: dict[tuple[str, str], str],
    problems: list[str],
) -> dict[str, list[_Offer]]:
    """What each registered module offers through ``hook_name``, by plugin name. Each module's
    hook is called on its own, so one failing module is named and the others still count."""
    toml_name = next(k.toml_name for k in ALL_KINDS if k.hook_name == hook_name)
    by_name: dict[str, list[_Offer]] = {}
    for source, plugin in registered:
        if not any(caller.name == hook_name for caller in manager.get_hookcallers(plugin) or []):
            continue
        others = [other for _, other in registered if other is not plugin]
        try:
            results = manager.subset_hook_caller(hook_name, remove_plugins=others)()
        except Exception as error:
            problems.append(
                f"{source.describe()}: hook {hook_name} failed: {type(error).__name__}: {error}"
            )
            continue
        for result in results:
            if not isinstance(result, list | tuple):
                problems.append(
                    f"{source.describe()}: hook {hook_name} returned "
                    f"{type(result).__name__} where a list of PluginRegistration was expected"
                )
                continue
            for item in result:
                reason = _check_registration(item)
                if reason is not None:
                    problems.append(f"{source.describe()}: hook {hook_name} {reason}")
                    continue
                assert isinstance(item, PluginRegistration)
                exclusion = plugin_filter.plugin_exclusion(
                    toml_name, item.name, source.distribution
                )
                if exclusion is not None:
                    excluded_plugins[(toml_name, item.name)] = exclusion
                    continue
                by_name.setdefault(item.name, []).append((source, item))
    return by_name


def _duplicates(offers: dict[str, dict[str, list[_Offer]]]) -> list[str]:
    """A problem for every plugin name offered more than once for the same hook."""
    problems: list[str] = []
    for hook_name, by_name in offers.items():
        for name, providers in sorted(by_name.items()):
            if len(providers) < 2:
                continue
            label = _hook_label(hook_name)
            distributions = {source.distribution for source, _ in providers}
            if len(distributions) == 1:
                problems.append(
                    f"{providers[0][0].describe()} provides {label} plugin "
                    f'"{name}" {len(providers)} times'
                )
            else:
                listed = " and ".join(source.describe() for source, _ in providers)
                problems.append(
                    f'{label} plugin "{name}" is provided by more than one distribution: '
                    f"{listed}; uninstall one or block it with PYSPIRE_PLUGINS_BLOCK"
                )
    return problems
