"""Every plugin hook pyspire knows, gathered for a pluggy plugin manager.

Each plugin type documents its hook next to its interface in :mod:`pyspire_sdk.plugins`; this
module only collects those modules so a host registers all hook specifications in one call::

    manager = pluggy.PluginManager(PROJECT_NAME)
    add_hookspecs(manager)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    manager.check_pending()   # an implementation of an unknown hook fails here, by name

With the specifications registered, pluggy rejects a hook implementation whose name is not a
known hook (on ``check_pending``) or whose arguments do not match its specification (on
registration), so a misspelt hook in a plugin is an error at start, not a silently ignored
plugin.
"""

from __future__ import annotations

__all__ = [
    "HOOKSPEC_MODULES",
    "HOOK_NAMES",
    "add_hookspecs",
    "new_plugin_manager",
]

from types import ModuleType

import pluggy

from pyspire_sdk.plugin import PROJECT_NAME
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

HOOKSPEC_MODULES: tuple[ModuleType, ...] = (
    datastore,
    key_manager,
    node_attestor,
    workload_attestor,
    upstream_authority,
    notifier,
    bundle_publisher,
    credential_composer,
    svid_store,
)
"""The nine plugin-type modules, each holding the ``@hookspec`` functions of its type."""

HOOK_NAMES: tuple[str, ...] = (
    "pyspire_datastores",
    "pyspire_key_managers",
    "pyspire_server_node_attestors",
    "pyspire_agent_node_attestors",
    "pyspire_workload_attestors",
    "pyspire_upstream_authorities",
    "pyspire_notifiers",
    "pyspire_bundle_publishers",
    "pyspire_credential_composers",
    "pyspire_svid_stores",
)
"""The name of every hook, in the order of :data:`HOOKSPEC_MODULES`."""


def add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Register the hook specifications of every plugin type on ``plugin_manager``.

    The manager must belong to the project ``"pyspire"``
    (:data:`~pyspire_sdk.plugin.PROJECT_NAME`); specifications of another project would be
    silently ignored by pluggy, so that is refused with ``ValueError``. Registering twice on
    the same manager is harmless.
    """
    if plugin_manager.project_name != PROJECT_NAME:
        raise ValueError(
            f"plugin manager project is {plugin_manager.project_name!r}, expected {PROJECT_NAME!r}"
        )
    for module in HOOKSPEC_MODULES:
        names = [
            name
            for name in dir(module)
            if plugin_manager.parse_hookspec_opts(module, name) is not None
        ]
        if names and all(_has_spec(plugin_manager, name) for name in names):
            continue
        plugin_manager.add_hookspecs(module)


def _has_spec(plugin_manager: pluggy.PluginManager, name: str) -> bool:
    caller = getattr(plugin_manager.hook, name, None)
    return caller is not None and caller.spec is not None


def new_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager for project ``"pyspire"`` with every hook specification added."""
    plugin_manager = pluggy.PluginManager(PROJECT_NAME)
    add_hookspecs(plugin_manager)
    return plugin_manager
