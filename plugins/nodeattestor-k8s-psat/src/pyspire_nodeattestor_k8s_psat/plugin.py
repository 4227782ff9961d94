"""The module pyspire loads through the entry point: both halves of ``k8s_psat``.

Registration imports nothing heavy: kubernetes_asyncio is loaded when a cluster is configured.
"""

from __future__ import annotations

__all__ = ["pyspire_agent_node_attestors", "pyspire_server_node_attestors"]

from pyspire_nodeattestor_k8s_psat.agent import AgentK8sPsatAttestor, AgentK8sPsatConfig
from pyspire_nodeattestor_k8s_psat.names import PLUGIN_NAME
from pyspire_nodeattestor_k8s_psat.server import ServerK8sPsatAttestor, ServerK8sPsatConfig
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, ServerNodeAttestor


@hookimpl
def pyspire_server_node_attestors() -> list[
    PluginRegistration[ServerK8sPsatConfig, ServerNodeAttestor]
]:
    """Offer the server half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=ServerK8sPsatConfig,
            factory=ServerK8sPsatAttestor,
            description="pods, by their projected service account token",
        )
    ]


@hookimpl
def pyspire_agent_node_attestors() -> list[
    PluginRegistration[AgentK8sPsatConfig, AgentNodeAttestor]
]:
    """Offer the agent half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=AgentK8sPsatConfig,
            factory=AgentK8sPsatAttestor,
            description="presents the pod's projected service account token",
        )
    ]
