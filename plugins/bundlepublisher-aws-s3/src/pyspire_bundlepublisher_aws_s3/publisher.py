"""The ``aws_s3`` bundle publisher: the trust bundle uploaded with S3 PutObject.

Each upload uses a client made for it by :mod:`pyspire_sdk.aws` (aiobotocore is imported at
the first upload, so a server that loads the plugin without configuring it pays nothing),
bounded by :data:`~pyspire_sdk.aws.CALL_TIMEOUT` and made once; credentials S3 refuses are
:class:`~pyspire_sdk.errors.PermissionDeniedError` (:data:`~pyspire_sdk.aws.REFUSALS`), other
failures :class:`~pyspire_sdk.errors.UnavailableError`, which the server retries. The SDK's
``PublishedBundleMemo`` skips an unchanged bundle and serializes uploads in the order they
were asked, so the newest bundle is the one left in the bucket. The secret access key is
never logged nor put in an error.
"""

from __future__ import annotations

__all__ = ["AwsS3Publisher"]

from pyspire_bundlepublisher_aws_s3.config import AwsS3Config
from pyspire_sdk.aws import REFUSALS, AwsAccess, aws_call, aws_client
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.bundle_formats import BundleFormat, encode_bundle
from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.bundle_publisher import PublishedBundleMemo

_CONTENT_TYPES = {
    BundleFormat.SPIFFE: "application/json",
    BundleFormat.JWKS: "application/jwk-set+json",
    BundleFormat.PEM: "application/x-pem-file",
}


class AwsS3Publisher:
    """A :class:`~pyspire_sdk.plugins.bundle_publisher.BundlePublisher` writing one S3 object."""

    def __init__(self) -> None:
        self._config: AwsS3Config | None = None
        self._memo = PublishedBundleMemo()

    async def configure(self, config: AwsS3Config, host: HostServices) -> None:
        """Keep the settings; a new destination is written whatever it was last sent."""
        if self._config != config:
            self._memo.forget()
        self._config = config

    async def close(self) -> None:
        """Nothing is held between uploads."""
        self._config = None

    async def publish_bundle(self, bundle: Bundle) -> None:
        """Upload ``bundle`` unless it is the one uploaded last."""
        config = self._config
        if config is None:
            raise PluginError("bundle publisher is not configured")
        async with self._memo.publishing(bundle) as changed:
            if changed:
                await self._upload(config, encode_bundle(bundle, config.format))

    async def _upload(self, config: AwsS3Config, body: bytes) -> None:
        access = AwsAccess(
            region=config.region,
            access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key,
            endpoint=config.endpoint,
        )
        async with aws_client("s3", access) as s3:
            await aws_call(
                f"upload the bundle to s3://{config.bucket}/{config.object_key}",
                s3.put_object(
                    Bucket=config.bucket,
                    Key=config.object_key,
                    Body=body,
                    ContentType=_CONTENT_TYPES[config.format],
                ),
                REFUSALS,
            )
