"""The module pyspire loads through the entry point: it registers the upstream authority."""

from __future__ import annotations

__all__ = ["pyspire_upstream_authorities"]

from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority
from pyspire_upstreamauthority_aws_pca.config import PLUGIN_NAME, AwsPcaUpstreamConfig
from pyspire_upstreamauthority_aws_pca.upstream import AwsPcaUpstreamAuthority


@hookimpl
def pyspire_upstream_authorities() -> list[
    PluginRegistration[AwsPcaUpstreamConfig, UpstreamAuthority]
]:
    """Offer the ``aws_pca`` upstream authority."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=AwsPcaUpstreamConfig,
            factory=AwsPcaUpstreamAuthority,
            description="has an AWS Private CA issue the server's CA",
        )
    ]
