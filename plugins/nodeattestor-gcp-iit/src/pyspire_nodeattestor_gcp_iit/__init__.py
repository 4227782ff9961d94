"""The ``gcp_iit`` node attestor: GCP instances prove themselves with the instance identity
token Google's metadata service gives them; the server verifies it against Google's keys."""

from pyspire_nodeattestor_gcp_iit.agent import AgentGcpIitAttestor, AgentGcpIitConfig
from pyspire_nodeattestor_gcp_iit.server import ServerGcpIitAttestor, ServerGcpIitConfig

__all__ = [
    "AgentGcpIitAttestor",
    "AgentGcpIitConfig",
    "ServerGcpIitAttestor",
    "ServerGcpIitConfig",
]
