"""The ``spire`` upstream authority: a nested server's CA signed by its upstream server."""

from __future__ import annotations

__all__ = ["SpireUpstreamAuthority", "SpireUpstreamConfig"]

from pyspire_upstreamauthority_spire.config import SpireUpstreamConfig
from pyspire_upstreamauthority_spire.upstream import SpireUpstreamAuthority
