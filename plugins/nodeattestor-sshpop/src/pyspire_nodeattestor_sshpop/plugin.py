"""The module pyspire loads through the entry point: both halves of ``sshpop``."""

from __future__ import annotations

__all__ = ["pyspire_agent_node_attestors", "pyspire_server_node_attestors"]

from pyspire_nodeattestor_sshpop.agent import AgentSshPopAttestor
from pyspire_nodeattestor_sshpop.config import PLUGIN_NAME, SshPopAgentConfig, SshPopServerConfig
from pyspire_nodeattestor_sshpop.server import ServerSshPopAttestor
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, ServerNodeAttestor


@hookimpl
def pyspire_server_node_attestors() -> list[
    PluginRegistration[SshPopServerConfig, ServerNodeAttestor]
]:
    """Offer the server half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=SshPopServerConfig,
            factory=ServerSshPopAttestor,
            description="SSH host certificates signed by trusted CAs, with proof of possession",
        )
    ]


@hookimpl
def pyspire_agent_node_attestors() -> list[
    PluginRegistration[SshPopAgentConfig, AgentNodeAttestor]
]:
    """Offer the agent half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=SshPopAgentConfig,
            factory=AgentSshPopAttestor,
            description="presents the SSH host certificate and signs challenges with the host key",
        )
    ]
