"""The ``azure_msi`` node attestor: Azure VMs prove themselves with a managed identity (MSI)
token; the server verifies it against Microsoft's keys and reads the VM's network from the
Resource Manager API."""

from pyspire_nodeattestor_azure_msi.agent import AgentAzureMsiAttestor, AgentAzureMsiConfig
from pyspire_nodeattestor_azure_msi.server import (
    ServerAzureMsiAttestor,
    ServerAzureMsiConfig,
    TenantConfig,
)

__all__ = [
    "AgentAzureMsiAttestor",
    "AgentAzureMsiConfig",
    "ServerAzureMsiAttestor",
    "ServerAzureMsiConfig",
    "TenantConfig",
]
