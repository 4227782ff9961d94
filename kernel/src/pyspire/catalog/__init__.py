"""The plugin catalog: installed plugins plus the ``plugins`` configuration table become
configured plugin objects.

Three steps, each usable on its own:

1. :class:`Discovery` finds installed plugins through entry points (group ``pyspire.plugins``)
   and asks each, through its type's synchronous pluggy hook, what it provides. Nothing is
   instantiated. ``PYSPIRE_PLUGINS_ALLOW`` and ``PYSPIRE_PLUGINS_BLOCK`` narrow what loads
   (:mod:`pyspire.catalog.filters`).
2. :func:`plan_plugins` checks a side's ``plugins`` table against them: types, names, each
   plugin's settings and each type's arity, reporting every issue with its key path. This is
   what ``validate`` runs.
3. :meth:`Catalog.open` creates and configures the planned plugins in order and closes them in
   reverse order.

Built-in plugins are distributions like any other; the kernel has no other way in.
"""

from pyspire.catalog.catalog import Catalog, HostFactory, LoadedPlugin, NamedPlugin
from pyspire.catalog.discovery import DiscoveredPlugin, Discovery, PluginLoadError
from pyspire.catalog.filters import ALLOW_ENV, BLOCK_ENV, PluginFilter
from pyspire.catalog.kinds import (
    AGENT_KEY_MANAGER,
    AGENT_KINDS,
    AGENT_NODE_ATTESTOR,
    ALL_KINDS,
    BUNDLE_PUBLISHERS,
    CREDENTIAL_COMPOSERS,
    DATASTORE,
    NOTIFIERS,
    SERVER_KEY_MANAGER,
    SERVER_KINDS,
    SERVER_NODE_ATTESTORS,
    SVID_STORES,
    UPSTREAM_AUTHORITY,
    WORKLOAD_ATTESTORS,
    AnyKind,
    ChainKind,
    OneKind,
    OptionalKind,
    PluginKind,
    Side,
    kinds_for,
)
from pyspire.catalog.listing import PluginListing, installed_plugins
from pyspire.catalog.plan import CatalogPlan, PlannedPlugin, plan_plugins, resolve_kind

__all__ = [
    "AGENT_KEY_MANAGER",
    "AGENT_KINDS",
    "AGENT_NODE_ATTESTOR",
    "ALLOW_ENV",
    "ALL_KINDS",
    "BLOCK_ENV",
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
    "Catalog",
    "CatalogPlan",
    "ChainKind",
    "DiscoveredPlugin",
    "Discovery",
    "HostFactory",
    "LoadedPlugin",
    "NamedPlugin",
    "OneKind",
    "OptionalKind",
    "PlannedPlugin",
    "PluginFilter",
    "PluginKind",
    "PluginListing",
    "PluginLoadError",
    "Side",
    "installed_plugins",
    "kinds_for",
    "plan_plugins",
    "resolve_kind",
]
