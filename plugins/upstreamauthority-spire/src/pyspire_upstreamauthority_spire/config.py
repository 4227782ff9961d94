"""The settings of the ``spire`` upstream authority, with SPIRE's keys."""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "SpireUpstreamConfig"]

from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.config import setting

PLUGIN_NAME = "spire"


@dataclass(frozen=True, kw_only=True)
class SpireUpstreamConfig:
    """``[server.plugins.upstream_authority.spire]``."""

    server_address: str = setting(
        description="host name or IP address of the upstream server of the same trust domain"
    )
    server_port: int = setting(description="TCP port of the upstream server's API")
    workload_api_socket: Path = setting(
        description="unix socket of the Workload API of the agent on this server's node, an "
        "agent of the upstream server; this server's X509-SVID, from an entry marked "
        "`downstream`, authenticates it to the upstream"
    )
