"""The module pyspire loads through the entry point: it registers the upstream authority."""

from __future__ import annotations

__all__ = ["pyspire_upstream_authorities"]

from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority
from pyspire_upstreamauthority_awssecret.config import PLUGIN_NAME, AwsSecretUpstreamConfig
from pyspire_upstreamauthority_awssecret.upstream import AwsSecretUpstreamAuthority


@hookimpl
def pyspire_upstream_authorities() -> list[
    PluginRegistration[AwsSecretUpstreamConfig, UpstreamAuthority]
]:
    """Offer the ``awssecret`` upstream authority."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=AwsSecretUpstreamConfig,
            factory=AwsSecretUpstreamAuthority,
            description="signs the server's CA with a CA certificate and key kept in AWS "
            "Secrets Manager",
        )
    ]
