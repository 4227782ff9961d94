"""Configured plugin objects for one process, opened and closed as a unit.

:meth:`Catalog.open` turns a :class:`~pyspire.catalog.plan.CatalogPlan` into live plugins: for
each planned plugin, in plan order (kinds in configuration order, chains in document order), it
calls the registration's factory, checks the object implements its kind's interface (the SDK's
``Protocol``: every member present, async where the Protocol's is), and awaits
``configure(config, host)``. Any failure is raised as :class:`~pyspire_sdk.errors.PluginError`
naming the plugin's type, name and distribution, after every plugin already created has been
closed. On leaving the context every created plugin is closed in reverse order, including one
whose ``configure`` failed (the plugin contract promises ``close`` after a failed
``configure``).
"""

from __future__ import annotations

__all__ = ["Catalog", "HostFactory", "LoadedPlugin", "NamedPlugin"]

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import structlog

from pyspire.catalog.kinds import ChainKind, OneKind, OptionalKind, PluginKind
from pyspire.catalog.plan import CatalogPlan, PlannedPlugin
from pyspire_sdk.errors import ConfigError, PluginError
from pyspire_sdk.plugin import HostServices

_log = structlog.get_logger("pyspire.catalog")

HostFactory = Callable[[PlannedPlugin], HostServices]
"""Builds the host services one plugin gets (its logger bound to its name and type)."""

_PROTOCOL_BASES = {"Protocol", "Generic", "object"}

InterfaceT = TypeVar("InterfaceT")


@dataclass(frozen=True)
class LoadedPlugin:
    """One created plugin object and the plan entry it came from."""

    planned: PlannedPlugin
    instance: object

    @property
    def label(self) -> str:
        """``<type> plugin "<name>" (<distribution> <version>)`` for messages."""
        return _label(self.planned)


def _label(planned: PlannedPlugin) -> str:
    return f'{planned.kind.toml_name} plugin "{planned.name}" ({planned.discovered.origin})'


def _protocol_members(interface: type) -> dict[str, bool]:
    """The public members a Protocol requires, each with whether it must be a coroutine
    function. ``configure`` and ``close`` come from the ``Plugin`` base and are included."""
    members: dict[str, bool] = {}
    for klass in reversed(interface.__mro__):
        if klass.__name__ in _PROTOCOL_BASES or not getattr(klass, "_is_protocol", False):
            continue
        for name in getattr(klass, "__annotations__", {}):
            if not name.startswith("_"):
                members.setdefault(name, False)
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            function = value.__func__ if isinstance(value, classmethod | staticmethod) else value
            if callable(function):
                members[name] = inspect.iscoroutinefunction(function)
    return members


def _check_interface(kind: PluginKind[Any], instance: object) -> str | None:
    """Why ``instance`` does not implement ``kind``'s interface, or ``None``."""
    interface = kind.interface
    missing: list[str] = []
    not_async: list[str] = []
    for name, must_be_async in _protocol_members(interface).items():
        if not hasattr(instance, name):
            missing.append(name)
        elif must_be_async and not inspect.iscoroutinefunction(getattr(instance, name)):
            not_async.append(name)
    reasons: list[str] = []
    if missing:
        reasons.append("missing " + ", ".join(sorted(missing)))
    if not_async:
        reasons.append("not async: " + ", ".join(sorted(not_async)))
    if not reasons:
        return None
    return f"does not implement {kind.interface_name}: {'; '.join(reasons)}"


class _Closeable(Protocol):
    async def close(self) -> None: ...


class _Configurable(Protocol):
    async def configure(self, config: Any, host: HostServices) -> None: ...


@dataclass(frozen=True)
class NamedPlugin(Generic[InterfaceT]):
    """A plugin of a chain with the name it is configured under (the selector type of a
    workload attestor, the attestation type of a node attestor)."""

    name: str
    instance: InterfaceT


class Catalog:
    """The configured plugins of one side; read-only once open.

    Accessors take one of the kinds declared in :mod:`pyspire.catalog.kinds` and return that
    kind's interface, so callers are type-checked against the SDK's ``Protocol``: the getter a
    kind admits follows from its arity (:class:`OneKind`, :class:`OptionalKind`,
    :class:`ChainKind`). Every instance was checked against its interface when created.
    """

    def __init__(self, plan: CatalogPlan, loaded: tuple[LoadedPlugin, ...]) -> None:
        self.plan = plan
        self.loaded = loaded

    @classmethod
    @asynccontextmanager
    async def open(cls, plan: CatalogPlan, *, host_for: HostFactory) -> AsyncIterator[Catalog]:
        """Create and configure every planned plugin; close them all on exit.

        Raises :class:`PluginError` naming the first plugin that cannot be created, does not
        implement its interface or fails ``configure``; the plugins created before it are
        closed first, in reverse order.
        """
        created: list[LoadedPlugin] = []
        try:
            for planned in plan.plugins:
                loaded = _create(planned)
                created.append(loaded)  # closed on exit even when configure fails
                await _configure(loaded, host_for)
            catalog = cls(plan, tuple(created))
            yield catalog
        except BaseException:
            await _close_all(created, raise_errors=False)
            raise
        else:
            await _close_all(created, raise_errors=True)

    def _of(
        self, kind: PluginKind[InterfaceT], arity: type[PluginKind[Any]] = PluginKind
    ) -> list[NamedPlugin[InterfaceT]]:
        if not isinstance(kind, arity):
            raise TypeError(f"{kind} is not a {arity.__name__}: {kind.arity_phrase()}")
        if kind.side != self.plan.side:
            raise LookupError(f"{kind} is not a plugin type of the {self.plan.side}")
        return [
            # The instance was checked against kind.interface when it was created.
            NamedPlugin(plugin.planned.name, cast(InterfaceT, plugin.instance))
            for plugin in self.loaded
            if plugin.planned.kind is kind
        ]

    def chain(self, kind: ChainKind[InterfaceT]) -> tuple[NamedPlugin[InterfaceT], ...]:
        """The configured plugins of a chain kind in document order (possibly none)."""
        return tuple(self._of(kind, ChainKind))

    def one(self, kind: OneKind[InterfaceT]) -> InterfaceT:
        """The plugin of a kind that requires exactly one."""
        (plugin,) = self._of(kind, OneKind)
        return plugin.instance

    def one_named(self, kind: OneKind[InterfaceT]) -> NamedPlugin[InterfaceT]:
        """The plugin of a kind that requires exactly one, with its configured name."""
        (plugin,) = self._of(kind, OneKind)
        return plugin

    def optional(self, kind: OptionalKind[InterfaceT]) -> InterfaceT | None:
        """The plugin of a kind that allows at most one, or ``None`` when none is configured."""
        plugins = self._of(kind, OptionalKind)
        return plugins[0].instance if plugins else None

    def get(self, kind: PluginKind[InterfaceT], name: str) -> InterfaceT | None:
        """The configured plugin of ``kind`` called ``name``, or ``None``."""
        for plugin in self._of(kind):
            if plugin.name == name:
                return plugin.instance
        return None


def _create(planned: PlannedPlugin) -> LoadedPlugin:
    label = _label(planned)
    try:
        instance = planned.discovered.registration.factory()
    except Exception as error:
        raise PluginError(f"{label} cannot be created: {type(error).__name__}: {error}") from error
    reason = _check_interface(planned.kind, instance)
    if reason is not None:
        raise PluginError(f"{label} {reason}")
    return LoadedPlugin(planned, instance)


async def _configure(loaded: LoadedPlugin, host_for: HostFactory) -> None:
    planned = loaded.planned
    try:
        configurable = cast(_Configurable, loaded.instance)
        await configurable.configure(planned.config, host_for(planned))
    except ConfigError as error:
        raise PluginError(f"{loaded.label} rejected its configuration: {error}") from error
    except PluginError as error:
        raise PluginError(f"{loaded.label} failed to configure: {error}") from error
    except Exception as error:
        raise PluginError(
            f"{loaded.label} failed to configure: {type(error).__name__}: {error}"
        ) from error
    _log.info(
        "plugin configured",
        plugin_type=planned.kind.toml_name,
        plugin_name=planned.name,
        distribution=planned.discovered.distribution,
        version=planned.discovered.version,
    )


async def _close_all(created: list[LoadedPlugin], *, raise_errors: bool) -> None:
    """Close ``created`` in reverse order; every plugin is closed even when one fails."""
    failures: list[str] = []
    first: BaseException | None = None
    while created:
        plugin = created.pop()
        closeable = cast(_Closeable, plugin.instance)
        try:
            await closeable.close()
        except Exception as error:
            _log.error(
                "plugin failed to close",
                plugin_type=plugin.planned.kind.toml_name,
                plugin_name=plugin.planned.name,
                error=f"{type(error).__name__}: {error}",
            )
            failures.append(f"{plugin.label} failed to close: {type(error).__name__}: {error}")
            first = first or error
    if failures and raise_errors:
        raise PluginError("; ".join(failures)) from first
