"""What ``pyspire-server plugins`` and ``pyspire-agent plugins`` print: one row per plugin."""

from __future__ import annotations

__all__ = ["PluginListing", "installed_plugins"]

from dataclasses import dataclass

from pyspire.catalog.discovery import Discovery
from pyspire.catalog.kinds import Side, kinds_for


@dataclass(frozen=True)
class PluginListing:
    """One installed plugin of one side: its TOML type and name and where it comes from."""

    type: str
    name: str
    distribution: str
    version: str
    description: str


def installed_plugins(side: Side, discovery: Discovery) -> list[PluginListing]:
    """The plugins ``side`` can use, kinds in configuration order, names sorted within a kind.

    The description is the registration's own; a plugin that gives none shows an empty one.
    """
    return [
        PluginListing(
            type=kind.toml_name,
            name=plugin.name,
            distribution=plugin.distribution,
            version=plugin.version,
            description=plugin.registration.description,
        )
        for kind in kinds_for(side)
        for plugin in discovery.plugins(kind)
    ]
