"""The plugin types each process side accepts, and how many of each it needs.

A :class:`PluginKind` is declared once per plugin type and side, and ties together everything
the catalog knows about it: its name in TOML (``[server.plugins.<toml_name>.<plugin>]``), the
SDK hookspec that discovers it, the interface (the SDK ``Protocol``) its objects implement, its
arity and the distribution prefix under which plugins of the type are published
(``pyspire-workloadattestor-``). The arity is also the kind's class — :class:`OneKind`,
:class:`OptionalKind`, :class:`ChainKind` — so the catalog's typed getters
(``catalog.one(DATASTORE) -> DataStore``) let the type checker see the plugin boundary. The
arities follow SPIRE's catalogs: a server needs exactly one datastore and one key manager, an
agent exactly one node attestor and one key manager and at least one workload attestor; the rest
are optional chains whose order is the order of their tables in the configuration document.
"""

from __future__ import annotations

__all__ = [
    "AGENT_KEY_MANAGER",
    "AGENT_KINDS",
    "AGENT_NODE_ATTESTOR",
    "ALL_KINDS",
    "BUNDLE_PUBLISHERS",
    "CREDENTIAL_COMPOSERS",
    "DATASTORE",
    "NOTIFIERS",
    "SERVER_KEY_MANAGER",
    "SERVER_KINDS",
    "SERVER_NODE_ATTESTORS",
    "SVID_STORES",
    "UPSTREAM_AUTHORITY",
    "WORKLOAD_ATTESTORS",
    "AnyKind",
    "ChainKind",
    "OneKind",
    "OptionalKind",
    "PluginKind",
    "Side",
    "kinds_for",
]

import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, Generic, TypeVar

from pyspire_sdk.plugin import PluginRegistration, distribution_name, distribution_prefix
from pyspire_sdk.plugins import (
    bundle_publisher,
    credential_composer,
    datastore,
    key_manager,
    node_attestor,
    notifier,
    svid_store,
    upstream_authority,
    workload_attestor,
)

InterfaceT = TypeVar("InterfaceT")


class Side(StrEnum):
    """Which process a plugin configuration belongs to; also the top-level TOML table."""

    SERVER = "server"
    AGENT = "agent"


@dataclass(frozen=True, eq=False)
class PluginKind(Generic[InterfaceT]):
    """One plugin type as one side of pyspire uses it.

    ``min_count`` and ``max_count`` bound how many plugins of the kind a configuration may name
    (``max_count`` ``None`` means no upper bound). A kind without an upper bound is a chain: its
    plugins run in document order. Kinds compare by identity: each is declared once, below.
    """

    side: Side
    toml_name: str
    hook: Callable[[], list[PluginRegistration[Any, InterfaceT]]]
    min_count: int
    max_count: int | None

    @property
    def hook_name(self) -> str:
        """The name of the pluggy hook that discovers plugins of this kind."""
        return self.hook.__name__

    @cached_property
    def interface(self) -> type:
        """The ``typing.Protocol`` objects of this kind implement: the plugin type of the
        registrations the SDK's hookspec returns, so the SDK declares it once."""
        returned = typing.get_type_hints(self.hook)["return"]
        (registration,) = typing.get_args(returned)
        interface = typing.get_args(registration)[1]
        if not isinstance(interface, type):
            raise TypeError(f"hook {self.hook_name} does not return registrations of a class")
        return interface

    @property
    def interface_name(self) -> str:
        """The name of the interface, for messages."""
        return self.interface.__name__

    @property
    def distribution_prefix(self) -> str:
        """How distributions of this kind are conventionally named: ``pyspire-keymanager-``."""
        return distribution_prefix(self.toml_name)

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

    def admits(self, count: int) -> bool:
        """Whether ``count`` plugins of this kind satisfy its arity."""
        if count < self.min_count:
            return False
        return self.max_count is None or count <= self.max_count

    def __str__(self) -> str:
        return f"{self.side}.{self.toml_name}"


@dataclass(frozen=True, eq=False)
class OneKind(PluginKind[InterfaceT]):
    """A kind that needs exactly one plugin (the datastore, a key manager)."""

    min_count: int = 1
    max_count: int | None = 1


@dataclass(frozen=True, eq=False)
class OptionalKind(PluginKind[InterfaceT]):
    """A kind that allows at most one plugin (the upstream authority)."""

    min_count: int = 0
    max_count: int | None = 1


@dataclass(frozen=True, eq=False)
class ChainKind(PluginKind[InterfaceT]):
    """A kind whose plugins form a chain in document order; ``min_count`` may be 1."""

    min_count: int = 0
    max_count: int | None = None


AnyKind = PluginKind[Any]
"""A kind of any interface, for code that handles every kind alike (discovery, plans)."""

DATASTORE = OneKind(Side.SERVER, "datastore", datastore.pyspire_datastores)
SERVER_KEY_MANAGER = OneKind(Side.SERVER, "key_manager", key_manager.pyspire_key_managers)
UPSTREAM_AUTHORITY = OptionalKind(
    Side.SERVER, "upstream_authority", upstream_authority.pyspire_upstream_authorities
)
SERVER_NODE_ATTESTORS = ChainKind(
    Side.SERVER, "node_attestor", node_attestor.pyspire_server_node_attestors
)
NOTIFIERS = ChainKind(Side.SERVER, "notifier", notifier.pyspire_notifiers)
BUNDLE_PUBLISHERS = ChainKind(
    Side.SERVER, "bundle_publisher", bundle_publisher.pyspire_bundle_publishers
)
CREDENTIAL_COMPOSERS = ChainKind(
    Side.SERVER, "credential_composer", credential_composer.pyspire_credential_composers
)
AGENT_KEY_MANAGER = OneKind(Side.AGENT, "key_manager", key_manager.pyspire_key_managers)
AGENT_NODE_ATTESTOR = OneKind(
    Side.AGENT, "node_attestor", node_attestor.pyspire_agent_node_attestors
)
WORKLOAD_ATTESTORS = ChainKind(
    Side.AGENT,
    "workload_attestor",
    workload_attestor.pyspire_workload_attestors,
    min_count=1,
)
SVID_STORES = ChainKind(Side.AGENT, "svid_store", svid_store.pyspire_svid_stores)

SERVER_KINDS: tuple[AnyKind, ...] = (
    DATASTORE,
    SERVER_KEY_MANAGER,
    UPSTREAM_AUTHORITY,
    SERVER_NODE_ATTESTORS,
    NOTIFIERS,
    BUNDLE_PUBLISHERS,
    CREDENTIAL_COMPOSERS,
)
"""The server's plugin kinds, in the order the catalog configures them."""

AGENT_KINDS: tuple[AnyKind, ...] = (
    AGENT_KEY_MANAGER,
    AGENT_NODE_ATTESTOR,
    WORKLOAD_ATTESTORS,
    SVID_STORES,
)
"""The agent's plugin kinds, in the order the catalog configures them."""

ALL_KINDS: tuple[AnyKind, ...] = SERVER_KINDS + AGENT_KINDS
"""Every kind of both sides; a hook shared by both sides (key managers) appears twice."""


def kinds_for(side: Side) -> tuple[AnyKind, ...]:
    """The kinds of ``side``, in configuration order."""
    return SERVER_KINDS if Side(side) is Side.SERVER else AGENT_KINDS
