"""Node attestor ``x509pop``: proof of possession of an X.509 certificate's private key."""

from pyspire_nodeattestor_x509pop.agent import AgentX509PopAttestor
from pyspire_nodeattestor_x509pop.config import X509PopAgentConfig, X509PopServerConfig
from pyspire_nodeattestor_x509pop.server import ServerX509PopAttestor

__all__ = [
    "AgentX509PopAttestor",
    "ServerX509PopAttestor",
    "X509PopAgentConfig",
    "X509PopServerConfig",
]
