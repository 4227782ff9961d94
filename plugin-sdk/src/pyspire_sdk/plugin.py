"""How a plugin introduces itself to pyspire.

Discovery is not calling. A plugin distribution declares an entry point in the group
:data:`ENTRY_POINT_GROUP` that names a module (or object) with pluggy hook implementations.
pluggy calls the *synchronous* hook of each plugin type (``pyspire_key_managers()``, ...), which
returns :class:`PluginRegistration` objects: the plugin's name as written in TOML, its
configuration dataclass and a factory. The kernel then builds instances with the factory,
configures them with :meth:`Plugin.configure` and awaits their methods directly; pluggy never
sees a coroutine.

Example (a plugin module)::

    from pyspire_sdk.plugin import PluginRegistration, hookimpl

    @hookimpl
    def pyspire_workload_attestors():
        return [PluginRegistration(name="env", config_type=EnvConfig, factory=EnvAttestor)]

and in its ``pyproject.toml``::

    [project.entry-points."pyspire.plugins"]
    env = "pyspire_workloadattestor_env.plugin"
"""

from __future__ import annotations

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT_NAME",
    "HostServices",
    "JoinTokenStore",
    "Metrics",
    "Plugin",
    "PluginRegistration",
    "TrustBundleSource",
    "distribution_name",
    "distribution_prefix",
    "hookimpl",
    "hookspec",
]

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import pluggy
import structlog

from pyspire_sdk._upstream import UpstreamServers
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.model import JoinToken
from pyspire_sdk.spiffeid import TrustDomain

PROJECT_NAME = "pyspire"
"""The pluggy project name; hook implementations must use :data:`hookimpl`."""

ENTRY_POINT_GROUP = "pyspire.plugins"
"""The one entry-point group for every plugin type; a module may provide several types."""


def distribution_prefix(plugin_type: str) -> str:
    """How the distributions of plugins of ``plugin_type`` (as written in TOML) are named:
    ``pyspire-<type without underscores>-``, e.g. ``pyspire-nodeattestor-``."""
    return f"pyspire-{plugin_type.replace('_', '')}-"


def distribution_name(plugin_type: str, plugin_name: str) -> str:
    """The distribution a plugin is conventionally published as: the ``join_token`` node
    attestor is ``pyspire-nodeattestor-join-token``. The kernel suggests it for a plugin that is
    not installed, and ``pyspire-plugin new`` names a new plugin's package with it."""
    return distribution_prefix(plugin_type) + plugin_name.replace("_", "-").lower()


hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@runtime_checkable
class Metrics(Protocol):
    """Where a plugin reports what it measures. Names are dotted (``keymanager.sign``)."""

    def increment(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to the counter ``name``."""
        ...

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one sample (a latency in seconds, a size) of the histogram ``name``."""
        ...


@runtime_checkable
class JoinTokenStore(Protocol):
    """Host service for server node attestors: the join tokens operators created."""

    async def consume(self, token: str) -> JoinToken:
        """Delete the token and return it, in one step, so it can never be used twice.

        Raises :class:`~pyspire_sdk.errors.NotFoundError` when no such token exists (never
        created, or already used). The caller checks ``expires_at``.
        """
        ...


@runtime_checkable
class TrustBundleSource(Protocol):
    """Host service for server plugins: the server's own trust bundle, as it is now.

    SPIRE gives its plugins the same through the IdentityProvider host service; x509pop's
    ``mode = "spiffe"`` verifies agents' certificates against it.
    """

    async def current_bundle(self) -> Bundle:
        """The bundle of the server's trust domain, current to the last change the server
        saw; :class:`~pyspire_sdk.errors.UnavailableError` before the server has loaded it."""
        ...


@dataclass(frozen=True)
class HostServices:
    """What the host gives each plugin at configure time, the way SPIRE hands plugins host
    services: who we are (trust domain), time, logging bound to the plugin, metrics, and the
    directory where the process keeps its state.

    ``join_tokens`` is set on the server side only (for node attestors), ``trust_bundle`` on
    the server side only, ``upstream_servers`` for a server's upstream authority; ``extras``
    carries host services added later, looked up by name, so
    older plugins keep loading."""

    trust_domain: TrustDomain
    clock: Clock
    logger: structlog.typing.FilteringBoundLogger
    metrics: Metrics
    data_dir: Path
    plugin_name: str = ""
    plugin_type: str = ""
    join_tokens: JoinTokenStore | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    trust_bundle: TrustBundleSource | None = None
    upstream_servers: UpstreamServers | None = None


@runtime_checkable
class Plugin(Protocol):
    """The life cycle every plugin object has, whatever its type.

    ``configure`` is called exactly once before any other method, with an already validated
    configuration; it raises :class:`~pyspire_sdk.errors.PluginError` (or ``ConfigError``) when
    the configuration cannot work (a file that is missing, a key that does not parse).
    ``close`` releases what ``configure`` opened; it is called once at shutdown, also after a
    failed ``configure``.
    """

    async def configure(self, config: Any, host: HostServices) -> None: ...

    async def close(self) -> None: ...


ConfigT = TypeVar("ConfigT")
PluginT = TypeVar("PluginT")


@dataclass(frozen=True)
class PluginRegistration(Generic[ConfigT, PluginT]):
    """One plugin a distribution offers.

    ``name`` is how operators refer to it in TOML (``[server.plugins.key_manager.<name>]``) and
    becomes the selector type of a node or workload attestor. ``config_type`` is a frozen
    dataclass declared with :func:`pyspire_sdk.config.setting`; a plugin that takes no settings
    uses :class:`NoConfig`. ``factory`` builds a fresh, unconfigured plugin object.
    """

    name: str
    config_type: type[ConfigT]
    factory: Callable[[], PluginT]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ValueError(f"invalid plugin name {self.name!r}: use letters, digits, '_' and '-'")


@dataclass(frozen=True)
class NoConfig:
    """The configuration of a plugin that takes no settings; any key is an error."""


__all__ += ["NoConfig"]
