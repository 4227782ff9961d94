"""The entry point pyspire loads: it registers ``aws_s3``.

Registration imports nothing heavy: aiobotocore is loaded at the first upload.
"""

from __future__ import annotations

__all__ = ["pyspire_bundle_publishers"]

from pyspire_bundlepublisher_aws_s3.config import PLUGIN_NAME, AwsS3Config
from pyspire_bundlepublisher_aws_s3.publisher import AwsS3Publisher
from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher


@hookimpl
def pyspire_bundle_publishers() -> list[PluginRegistration[AwsS3Config, BundlePublisher]]:
    """The one bundle publisher this package provides."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=AwsS3Config,
            factory=AwsS3Publisher,
            description="uploads the trust bundle to an Amazon S3 object",
        )
    ]
