"""The ``disk`` upstream authority: the server's CA signed by a CA kept in local PEM files."""

from pyspire_upstreamauthority_disk.config import DiskUpstreamConfig
from pyspire_upstreamauthority_disk.upstream import DiskUpstreamAuthority

__all__ = ["DiskUpstreamAuthority", "DiskUpstreamConfig"]
