"""The module pyspire loads through the entry point: it registers the upstream authority."""

from __future__ import annotations

__all__ = ["pyspire_upstream_authorities"]

from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority
from pyspire_upstreamauthority_disk.config import PLUGIN_NAME, DiskUpstreamConfig
from pyspire_upstreamauthority_disk.upstream import DiskUpstreamAuthority


@hookimpl
def pyspire_upstream_authorities() -> list[
    PluginRegistration[DiskUpstreamConfig, UpstreamAuthority]
]:
    """Offer the ``disk`` upstream authority."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=DiskUpstreamConfig,
            factory=DiskUpstreamAuthority,
            description="signs the server's CA with a CA certificate and key kept in files",
        )
    ]
