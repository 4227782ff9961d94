"""The module pyspire loads through the entry point: both halves of ``aws_iid``.

Registration imports nothing heavy: aiobotocore is loaded when the server half first calls
AWS, aiohttp when the agent half first calls the metadata service.
"""

from __future__ import annotations

__all__ = ["pyspire_agent_node_attestors", "pyspire_server_node_attestors"]

from pyspire_nodeattestor_aws_iid.agent import AgentAwsIidAttestor, AgentAwsIidConfig
from pyspire_nodeattestor_aws_iid.identity import PLUGIN_NAME
from pyspire_nodeattestor_aws_iid.server import ServerAwsIidAttestor, ServerAwsIidConfig
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, ServerNodeAttestor


@hookimpl
def pyspire_server_node_attestors() -> list[
    PluginRegistration[ServerAwsIidConfig, ServerNodeAttestor]
]:
    """Offer the server half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=ServerAwsIidConfig,
            factory=ServerAwsIidAttestor,
            description="EC2 instances, by their instance identity document",
        )
    ]


@hookimpl
def pyspire_agent_node_attestors() -> list[
    PluginRegistration[AgentAwsIidConfig, AgentNodeAttestor]
]:
    """Offer the agent half."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=AgentAwsIidConfig,
            factory=AgentAwsIidAttestor,
            description="presents the EC2 instance identity document",
        )
    ]
