"""The module pyspire loads through the entry point: both halves of ``x509pop``."""

from __future__ import annotations

__all__ = ["pyspire_agent_node_attestors", "pyspire_server_node_attestors"]

from pyspire_nodeattestor_x509pop.agent import AgentX509PopAttestor
from pyspire_nodeattestor_x509pop.config import (
    PLUGIN_NAME,
    X509PopAgentConfig,
    X509PopServerConfig,
)
from pyspire_nodeattestor_x509pop.server import ServerX509PopAttestor
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, ServerNodeAttestor


@hookimpl
def pyspire_server_node_attestors() -> list[
    PluginRegistration[X509PopServerConfig, ServerNodeAttestor]
]:
    """Offer the server half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=X509PopServerConfig,
            factory=ServerX509PopAttestor,
            description="X.509 certificates signed by trusted CAs, with proof of possession",
        )
    ]


@hookimpl
def pyspire_agent_node_attestors() -> list[
    PluginRegistration[X509PopAgentConfig, AgentNodeAttestor]
]:
    """Offer the agent half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=X509PopAgentConfig,
            factory=AgentX509PopAttestor,
            description="presents the node's X.509 certificate and signs challenges with its key",
        )
    ]
