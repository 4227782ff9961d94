"""The ``aws_pca`` upstream authority: the server's CA issued by an AWS Private CA."""

from pyspire_upstreamauthority_aws_pca.config import AwsPcaUpstreamConfig
from pyspire_upstreamauthority_aws_pca.upstream import AwsPcaUpstreamAuthority

__all__ = ["AwsPcaUpstreamAuthority", "AwsPcaUpstreamConfig"]
