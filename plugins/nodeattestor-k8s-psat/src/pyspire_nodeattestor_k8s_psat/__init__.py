"""The ``k8s_psat`` node attestor: agents in Kubernetes pods prove themselves with a projected
service account token, which the server has the cluster's API server review."""

from pyspire_nodeattestor_k8s_psat.agent import AgentK8sPsatAttestor, AgentK8sPsatConfig
from pyspire_nodeattestor_k8s_psat.server import (
    ClusterConfig,
    ServerK8sPsatAttestor,
    ServerK8sPsatConfig,
)

__all__ = [
    "AgentK8sPsatAttestor",
    "AgentK8sPsatConfig",
    "ClusterConfig",
    "ServerK8sPsatAttestor",
    "ServerK8sPsatConfig",
]
