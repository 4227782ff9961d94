"""The ``aws_iid`` node attestor: EC2 instances prove themselves with the instance identity
document AWS signs for them; the server verifies it and looks the instance up in EC2."""

from pyspire_nodeattestor_aws_iid.agent import AgentAwsIidAttestor, AgentAwsIidConfig
from pyspire_nodeattestor_aws_iid.server import ServerAwsIidAttestor, ServerAwsIidConfig

__all__ = [
    "AgentAwsIidAttestor",
    "AgentAwsIidConfig",
    "ServerAwsIidAttestor",
    "ServerAwsIidConfig",
]
