"""The entry point pyspire loads: it registers the ``file`` bundle publisher."""

from __future__ import annotations

__all__ = ["pyspire_bundle_publishers"]

from pyspire_bundlepublisher_file.publisher import PLUGIN_NAME, FileConfig, FilePublisher
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher


@hookimpl
def pyspire_bundle_publishers() -> list[PluginRegistration[FileConfig, BundlePublisher]]:
    """The one bundle publisher this package provides."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=FileConfig,
            factory=FilePublisher,
            description="writes the trust bundle to a local file",
        )
    ]
