"""The module pyspire loads through the entry point: both halves of ``gcp_iit``.

Registration imports nothing heavy: aiohttp is loaded when a configured half first calls out.
"""

from __future__ import annotations

__all__ = ["pyspire_agent_node_attestors", "pyspire_server_node_attestors"]

from pyspire_nodeattestor_gcp_iit.agent import AgentGcpIitAttestor, AgentGcpIitConfig
from pyspire_nodeattestor_gcp_iit.identity import PLUGIN_NAME
from pyspire_nodeattestor_gcp_iit.server import ServerGcpIitAttestor, ServerGcpIitConfig
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, ServerNodeAttestor


@hookimpl
def pyspire_server_node_attestors() -> list[
    PluginRegistration[ServerGcpIitConfig, ServerNodeAttestor]
]:
    """Offer the server half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=ServerGcpIitConfig,
            factory=ServerGcpIitAttestor,
            description="GCP instances, by their instance identity token",
        )
    ]


@hookimpl
def pyspire_agent_node_attestors() -> list[
    PluginRegistration[AgentGcpIitConfig, AgentNodeAttestor]
]:
    """Offer the agent half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=AgentGcpIitConfig,
            factory=AgentGcpIitAttestor,
            description="presents the GCP instance identity token",
        )
    ]
