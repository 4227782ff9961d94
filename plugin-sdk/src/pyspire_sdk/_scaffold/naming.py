"""The names of a new plugin package, all derived from the plugin's type and name."""

from __future__ import annotations

__all__ = ["PluginNames", "check_plugin_name"]

import re
from dataclasses import dataclass

from pyspire_sdk.plugin import distribution_name

_PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9]*([_-][a-z0-9]+)*$")


def check_plugin_name(name: str) -> str:
    """``name`` when it can name a plugin, its distribution and its Python package; else
    ``ValueError`` saying what a name may hold."""
    if not _PLUGIN_NAME.match(name):
        raise ValueError(
            f"plugin name {name!r} is not usable: use lower-case letters and digits, "
            "starting with a letter, words joined by single '_' or '-' (such as 'session' "
            "or 'join_token')"
        )
    return name


@dataclass(frozen=True)
class PluginNames:
    """Every name a plugin package uses.

    ``name`` is the plugin's name in TOML (``join_token``), ``distribution`` the name pip knows
    (``pyspire-nodeattestor-join-token``), ``package`` the import name
    (``pyspire_nodeattestor_join_token``), ``prefix`` the start of its class names
    (``JoinToken``) and ``module`` the stem of its test modules (``join_token_node_attestor``).
    """

    plugin_type: str
    name: str

    def __post_init__(self) -> None:
        check_plugin_name(self.name)

    @property
    def distribution(self) -> str:
        return distribution_name(self.plugin_type, self.name)

    @property
    def package(self) -> str:
        return self.distribution.replace("-", "_")

    @property
    def prefix(self) -> str:
        return "".join(word.capitalize() for word in re.split(r"[_-]", self.name))

    @property
    def module(self) -> str:
        return f"{self.name.replace('-', '_')}_{self.plugin_type}"
