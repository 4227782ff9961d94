"""Node attestor ``sshpop``: proof of possession of an SSH host certificate's private key."""

from pyspire_nodeattestor_sshpop.agent import AgentSshPopAttestor
from pyspire_nodeattestor_sshpop.config import SshPopAgentConfig, SshPopServerConfig
from pyspire_nodeattestor_sshpop.server import ServerSshPopAttestor

__all__ = [
    "AgentSshPopAttestor",
    "ServerSshPopAttestor",
    "SshPopAgentConfig",
    "SshPopServerConfig",
]
