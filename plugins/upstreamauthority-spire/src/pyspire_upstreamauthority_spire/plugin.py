"""The module pyspire loads through the entry point: it registers the upstream authority."""

from __future__ import annotations

__all__ = ["pyspire_upstream_authorities"]

from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority
from pyspire_upstreamauthority_spire.config import PLUGIN_NAME, SpireUpstreamConfig
from pyspire_upstreamauthority_spire.upstream import SpireUpstreamAuthority


@hookimpl
def pyspire_upstream_authorities() -> list[
    PluginRegistration[SpireUpstreamConfig, UpstreamAuthority]
]:
    """Offer the ``spire`` upstream authority."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=SpireUpstreamConfig,
            factory=SpireUpstreamAuthority,
            description="gets the server's CA from an upstream server of the same trust domain",
        )
    ]
