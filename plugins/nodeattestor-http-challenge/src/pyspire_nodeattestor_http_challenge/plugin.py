"""The module pyspire loads through the entry point: both halves of ``http_challenge``.

Importing it loads no HTTP library: the halves import aiohttp when they first need it.
"""

from __future__ import annotations

__all__ = ["pyspire_agent_node_attestors", "pyspire_server_node_attestors"]

from pyspire_nodeattestor_http_challenge.agent import AgentHttpChallengeAttestor
from pyspire_nodeattestor_http_challenge.config import (
    PLUGIN_NAME,
    HttpChallengeAgentConfig,
    HttpChallengeServerConfig,
)
from pyspire_nodeattestor_http_challenge.server import ServerHttpChallengeAttestor
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, ServerNodeAttestor


@hookimpl
def pyspire_server_node_attestors() -> list[
    PluginRegistration[HttpChallengeServerConfig, ServerNodeAttestor]
]:
    """Offer the server half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=HttpChallengeServerConfig,
            factory=ServerHttpChallengeAttestor,
            description="the server fetches a nonce from the agent's host name over HTTP",
        )
    ]


@hookimpl
def pyspire_agent_node_attestors() -> list[
    PluginRegistration[HttpChallengeAgentConfig, AgentNodeAttestor]
]:
    """Offer the agent half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=HttpChallengeAgentConfig,
            factory=AgentHttpChallengeAttestor,
            description="serves the server's nonce over HTTP while it attests",
        )
    ]
