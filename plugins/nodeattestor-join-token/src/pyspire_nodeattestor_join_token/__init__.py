"""Node attestor ``join_token``: one-time tokens an operator hands to an agent."""

from pyspire_nodeattestor_join_token.plugin import (
    AgentJoinTokenAttestor,
    AgentJoinTokenConfig,
    ServerJoinTokenAttestor,
)

__all__ = ["AgentJoinTokenAttestor", "AgentJoinTokenConfig", "ServerJoinTokenAttestor"]
