"""Which installed plugins an operator lets a process load.

Two environment variables narrow discovery without uninstalling anything:

``PYSPIRE_PLUGINS_ALLOW``
    Comma-separated. When set (and not empty), only the listed plugins load.
``PYSPIRE_PLUGINS_BLOCK``
    Comma-separated. The listed plugins never load; block wins over allow.

An item is either a distribution name (``pyspire-keymanager-disk``; compared after PEP 503
normalization, so ``PySpire_KeyManager.Disk`` is the same) or ``<type>:<name>`` with a plugin
type as written in TOML (``key_manager:disk``, ``workload_attestor:docker``). A blocked
distribution is never imported, which is how a broken third-party distribution is kept from
stopping a process. An allow list that names only ``<type>:<name>`` items still has to import
every distribution to learn what each provides; name distributions to avoid importing others.
"""

from __future__ import annotations

__all__ = [
    "ALLOW_ENV",
    "BLOCK_ENV",
    "PluginFilter",
    "normalize_distribution",
]

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyspire.catalog.kinds import ALL_KINDS
from pyspire_sdk.errors import ConfigError, ConfigIssue

ALLOW_ENV = "PYSPIRE_PLUGINS_ALLOW"
BLOCK_ENV = "PYSPIRE_PLUGINS_BLOCK"

_DISTRIBUTION_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_PLUGIN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def normalize_distribution(name: str) -> str:
    """A distribution name compared the way pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class _Items:
    distributions: frozenset[str] = frozenset()
    plugins: frozenset[tuple[str, str]] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.distributions or self.plugins)


def _parse(variable: str, text: str, issues: list[ConfigIssue]) -> _Items:
    known_types = sorted({kind.toml_name for kind in ALL_KINDS})
    distributions: set[str] = set()
    plugins: set[tuple[str, str]] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if ":" in item:
            type_name, _, name = item.partition(":")
            type_name, name = type_name.strip(), name.strip()
            if type_name not in known_types:
                issues.append(
                    ConfigIssue(
                        variable,
                        f'unknown plugin type "{type_name}" in "{item}"; '
                        f"known types: {', '.join(known_types)}",
                    )
                )
            elif not _PLUGIN_NAME.match(name):
                issues.append(ConfigIssue(variable, f'invalid plugin name "{name}" in "{item}"'))
            else:
                plugins.add((type_name, name))
        elif _DISTRIBUTION_NAME.match(item):
            distributions.add(normalize_distribution(item))
        else:
            issues.append(
                ConfigIssue(
                    variable,
                    f'"{item}" is neither a distribution name nor <type>:<name>',
                )
            )
    return _Items(frozenset(distributions), frozenset(plugins))


@dataclass(frozen=True)
class PluginFilter:
    """An allow list (``None``: everything is allowed) and a block list, already parsed.

    :meth:`admits_distribution` is asked before a distribution is imported and
    :meth:`admits_plugin` for each plugin a distribution offers.
    """

    allowed_distributions: frozenset[str] | None = None
    allowed_plugins: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    blocked_distributions: frozenset[str] = field(default_factory=frozenset)
    blocked_plugins: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, *, allow: str | None = None, block: str | None = None) -> PluginFilter:
        """Build a filter from the two comma-separated lists, or raise :class:`ConfigError`
        naming the variable and the item that is not understood."""
        issues: list[ConfigIssue] = []
        allowed = _parse(ALLOW_ENV, allow or "", issues)
        blocked = _parse(BLOCK_ENV, block or "", issues)
        if issues:
            raise ConfigError(issues)
        return cls(
            allowed_distributions=allowed.distributions if allowed else None,
            allowed_plugins=allowed.plugins,
            blocked_distributions=blocked.distributions,
            blocked_plugins=blocked.plugins,
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> PluginFilter:
        """The filter ``PYSPIRE_PLUGINS_ALLOW`` and ``PYSPIRE_PLUGINS_BLOCK`` describe."""
        env = os.environ if environ is None else environ
        return cls.parse(allow=env.get(ALLOW_ENV), block=env.get(BLOCK_ENV))

    @classmethod
    def of(cls, *, allow: Iterable[str] | None = None, block: Iterable[str] = ()) -> PluginFilter:
        """The same filter from lists of items (for callers that do not read the environment)."""
        return cls.parse(
            allow=None if allow is None else ",".join(allow),
            block=",".join(block),
        )

    @property
    def restricts(self) -> bool:
        """Whether an allow list is in force."""
        return self.allowed_distributions is not None

    def distribution_exclusion(self, distribution: str) -> str | None:
        """Why ``distribution`` must not even be imported, or ``None`` when it may be."""
        name = normalize_distribution(distribution)
        if name in self.blocked_distributions:
            return f"blocked by {BLOCK_ENV}"
        if self.allowed_distributions is None:
            return None
        if name in self.allowed_distributions or self.allowed_plugins:
            return None
        return f"not listed in {ALLOW_ENV}"

    def admits_distribution(self, distribution: str) -> bool:
        """Whether ``distribution`` may be imported at all."""
        return self.distribution_exclusion(distribution) is None

    def plugin_exclusion(self, type_name: str, name: str, distribution: str) -> str | None:
        """Why the plugin ``type_name:name`` of ``distribution`` is dropped, or ``None``."""
        if (type_name, name) in self.blocked_plugins:
            return f"blocked by {BLOCK_ENV}"
        if normalize_distribution(distribution) in self.blocked_distributions:
            return f"blocked by {BLOCK_ENV}"
        if self.allowed_distributions is None:
            return None
        if normalize_distribution(distribution) in self.allowed_distributions:
            return None
        if (type_name, name) in self.allowed_plugins:
            return None
        return f"not listed in {ALLOW_ENV}"

    def admits_plugin(self, type_name: str, name: str, distribution: str) -> bool:
        """Whether the plugin ``type_name:name`` offered by ``distribution`` may load."""
        return self.plugin_exclusion(type_name, name, distribution) is None
