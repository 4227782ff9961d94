"""The plugin types each process side accepts, and how many of each it needs.

A :class:`PluginKind` ties together everything the catalog knows about one plugin type on one
side: its name in TOML (``[server.plugins.<toml_name>.<plugin>]``), the pluggy hook that
discovers it, the interface its objects implement, its arity and the distribution prefix under
which plugins of the type are published (``pyspire-workloadattestor-``). The arities follow
SPIRE's catalogs: a server needs exactly one datastore and one key manager, an agent exactly one
node attestor and one key manager and at least one workload attestor; the rest are optional
chains whose order is the order of their tables in the configuration document.
"""

from __future__ import annotations

__all__ = [
    "AGENT_KINDS",
    "ALL_KINDS",
    "SERVER_KINDS",
    "PluginKind",
    "Side",
    "kinds_for",
]

import importlib
from dataclasses import dataclass
from enum import StrEnum

from pyspire_sdk.plugin import distribution_name, distribution_prefix


class Side(StrEnum):
    """Which process a plugin configuration belongs to; also the top-level TOML table."""

    SERVER = "server"
    AGENT = "agent"


@dataclass(frozen=True)
class PluginKind:
    """One plugin type as one side of pyspire uses it.

    ``min_count`` and ``max_count`` bound how many plugins of the kind a configuration may name
    (``max_count`` ``None`` means no upper bound). A kind without an upper bound is a chain: its
    plugins run in document order.
    """

    side: Side
    toml_name: str
    hook_name: str
    min_count: int
    max_count: int | None
    distribution_prefix: str
    sdk_module: str
    interface_name: str

    @property
    def is_chain(self) -> bool:
        """Whether several plugins of this kind may be configured, kept in document order."""
        return self.max_count is None

    @property
    def table_path(self) -> str:
        """The dotted TOML path of the kind's table, e.g. ``server.plugins.datastore``."""
        return f"{self.side}.plugins.{self.toml_name}"

    def suggested_distribution(self, name: str) -> str:
        """The distribution a plugin called ``name`` of this kind is conventionally published
        as: ``join_token`` of ``node_attestor`` is ``pyspire-nodeattestor-join-token``."""
        return distribution_name(self.toml_name, name)

    def arity_phrase(self) -> str:
        """How many plugins of this kind are needed, in the words error messages use."""
        if self.min_count == 1 and self.max_count == 1:
            return f"exactly one {self.toml_name} plugin is required"
        if self.max_count is None:
            if self.min_count == 0:
                return f"any number of {self.toml_name} plugins may be configured"
            if self.min_count == 1:
                return f"at least one {self.toml_name} plugin is required"
            return f"at least {self.min_count} {self.toml_name} plugins are required"
        if self.min_count == 0 and self.max_count == 1:
            return f"at most one {self.toml_name} plugin is allowed"
        return f"between {self.min_count} and {self.max_count} {self.toml_name} plugins are needed"

    def interface(self) -> type:
        """The ``typing.Protocol`` objects of this kind implement, from the SDK module that
        declares the kind's hook (``pyspire_sdk.plugins.workload_attestor.WorkloadAttestor``)."""
        interface = getattr(importlib.import_module(self.sdk_module), self.interface_name)
        if not isinstance(interface, type):
            raise TypeError(f"{self.sdk_module}.{self.interface_name} is not a class")
        return interface

    def admits(self, count: int) -> bool:
        """Whether ``count`` plugins of this kind satisfy its arity."""
        if count < self.min_count:
            return False
        return self.max_count is None or count <= self.max_count

    def __str__(self) -> str:
        return f"{self.side}.{self.toml_name}"


def _kind(
    side: Side,
    toml_name: str,
    hook_name: str,
    min_count: int,
    max_count: int | None,
    interface_name: str,
    *,
    sdk_module: str | None = None,
) -> PluginKind:
    return PluginKind(
        side=side,
        toml_name=toml_name,
        hook_name=hook_name,
        min_count=min_count,
        max_count=max_count,
        distribution_prefix=distribution_prefix(toml_name),
        sdk_module=f"pyspire_sdk.plugins.{sdk_module or toml_name}",
        interface_name=interface_name,
    )


SERVER_KINDS: tuple[PluginKind, ...] = (
    _kind(Side.SERVER, "datastore", "pyspire_datastores", 1, 1, "DataStore"),
    _kind(Side.SERVER, "key_manager", "pyspire_key_managers", 1, 1, "KeyManager"),
    _kind(
        Side.SERVER,
        "upstream_authority",
        "pyspire_upstream_authorities",
        0,
        1,
        "UpstreamAuthority",
    ),
    _kind(
        Side.SERVER,
        "node_attestor",
        "pyspire_server_node_attestors",
        0,
        None,
        "ServerNodeAttestor",
    ),
    _kind(Side.SERVER, "notifier", "pyspire_notifiers", 0, None, "Notifier"),
    _kind(
        Side.SERVER,
        "bundle_publisher",
        "pyspire_bundle_publishers",
        0,
        None,
        "BundlePublisher",
    ),
    _kind(
        Side.SERVER,
        "credential_composer",
        "pyspire_credential_composers",
        0,
        None,
        "CredentialComposer",
    ),
)
"""The server's plugin kinds, in the order the catalog configures them."""

AGENT_KINDS: tuple[PluginKind, ...] = (
    _kind(Side.AGENT, "key_manager", "pyspire_key_managers", 1, 1, "KeyManager"),
    _kind(
        Side.AGENT,
        "node_attestor",
        "pyspire_agent_node_attestors",
        1,
        1,
        "AgentNodeAttestor",
    ),
    _kind(
        Side.AGENT,
        "workload_attestor",
        "pyspire_workload_attestors",
        1,
        None,
        "WorkloadAttestor",
    ),
    _kind(Side.AGENT, "svid_store", "pyspire_svid_stores", 0, None, "SvidStore"),
)
"""The agent's plugin kinds, in the order the catalog configures them."""

ALL_KINDS: tuple[PluginKind, ...] = SERVER_KINDS + AGENT_KINDS
"""Every kind of both sides; a hook shared by both sides (key managers) appears twice."""


def kinds_for(side: Side) -> tuple[PluginKind, ...]:
    """The kinds of ``side``, in configuration order."""
    return SERVER_KINDS if Side(side) is Side.SERVER else AGENT_KINDS
