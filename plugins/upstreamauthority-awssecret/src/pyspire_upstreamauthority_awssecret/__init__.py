"""The ``awssecret`` upstream authority: the server's CA signed by a CA whose certificates and
key are kept in AWS Secrets Manager."""

from pyspire_upstreamauthority_awssecret.config import AwsSecretUpstreamConfig
from pyspire_upstreamauthority_awssecret.upstream import AwsSecretUpstreamAuthority

__all__ = ["AwsSecretUpstreamAuthority", "AwsSecretUpstreamConfig"]
