"""The module pyspire loads through the entry point: both halves of ``azure_msi``.

Registration imports nothing heavy: aiohttp is loaded when a configured half first calls out.
"""

from __future__ import annotations

__all__ = ["pyspire_agent_node_attestors", "pyspire_server_node_attestors"]

from pyspire_nodeattestor_azure_msi.agent import AgentAzureMsiAttestor, AgentAzureMsiConfig
from pyspire_nodeattestor_azure_msi.names import PLUGIN_NAME
from pyspire_nodeattestor_azure_msi.server import ServerAzureMsiAttestor, ServerAzureMsiConfig
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, ServerNodeAttestor


@hookimpl
def pyspire_server_node_attestors() -> list[
    PluginRegistration[ServerAzureMsiConfig, ServerNodeAttestor]
]:
    """Offer the server half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=ServerAzureMsiConfig,
            factory=ServerAzureMsiAttestor,
            description="Azure VMs, by their managed identity token",
        )
    ]


@hookimpl
def pyspire_agent_node_attestors() -> list[
    PluginRegistration[AgentAzureMsiConfig, AgentNodeAttestor]
]:
    """Offer the agent half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=AgentAzureMsiConfig,
            factory=AgentAzureMsiAttestor,
            description="presents the VM's managed identity token",
        )
    ]
