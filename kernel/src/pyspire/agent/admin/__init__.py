"""The agent's admin socket and the administration APIs served there (the Debug API, the
Delegated Identity API)."""

from pyspire.agent.admin.debug import AgentStatus, DebugService
from pyspire.agent.admin.delegated import DelegatedIdentityService
from pyspire.agent.admin.endpoint import ADMIN_API_LIMITS, AdminEndpoint

__all__ = [
    "ADMIN_API_LIMITS",
    "AdminEndpoint",
    "AgentStatus",
    "DebugService",
    "DelegatedIdentityService",
]
