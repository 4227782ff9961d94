"""Node attestor ``http_challenge``: the server fetches a nonce from the agent's host name."""

from pyspire_nodeattestor_http_challenge.agent import AgentHttpChallengeAttestor
from pyspire_nodeattestor_http_challenge.config import (
    HttpChallengeAgentConfig,
    HttpChallengeServerConfig,
)
from pyspire_nodeattestor_http_challenge.server import ServerHttpChallengeAttestor

__all__ = [
    "AgentHttpChallengeAttestor",
    "HttpChallengeAgentConfig",
    "HttpChallengeServerConfig",
    "ServerHttpChallengeAttestor",
]
