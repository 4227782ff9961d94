"""The ``aws_s3`` bundle publisher: the trust bundle uploaded with S3 PutObject.

aiobotocore is imported at the first upload, so a server that loads the plugin without
configuring it pays nothing. Each upload uses a client made for it from one shared botocore
session (which caches the S3 model), bounded by :data:`CALL_TIMEOUT`. The SDK's
``PublishedBundleMemo`` skips an unchanged bundle and serializes uploads in the order they
were asked, so the newest bundle is the one left in the bucket. The secret access key is
never logged nor put in an error.
"""

from __future__ import annotations

__all__ = ["CALL_TIMEOUT", "AwsS3Publisher"]

import asyncio
import functools
from collections.abc import Mapping
from typing import Any

from pyspire_bundlepublisher_aws_s3.config import AwsS3Config
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.bundle_formats import BundleFormat, encode_bundle
from pyspire_sdk.errors import PermissionDeniedError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.bundle_publisher import PublishedBundleMemo

CALL_TIMEOUT = 30.0
"""Seconds one upload may take before it counts as failed (and is retried by the server)."""

_CONTENT_TYPES = {
    BundleFormat.SPIFFE: "application/json",
    BundleFormat.JWKS: "application/jwk-set+json",
    BundleFormat.PEM: "application/x-pem-file",
}

_REFUSALS = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
"""S3 error codes meaning the credentials were refused rather than S3 being unreachable."""


@functools.cache
def _shared_session() -> Any:
    from aiobotocore.session import get_session

    return get_session()


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    details = response.get("Error", {}) if isinstance(response, Mapping) else {}
    return str(details.get("Code", "") or type(error).__name__)


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
        from aiobotocore.config import AioConfig
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{config.bucket}/{config.object_key}"
        options: dict[str, Any] = {
            "region_name": config.region,
            "config": AioConfig(
                connect_timeout=5,
                read_timeout=CALL_TIMEOUT,
                retries={"max_attempts": 1, "mode": "standard"},
            ),
        }
        if config.endpoint:
            options["endpoint_url"] = config.endpoint
        if config.access_key_id:
            options["aws_access_key_id"] = config.access_key_id
            options["aws_secret_access_key"] = config.secret_access_key
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                async with _shared_session().create_client("s3", **options) as s3:
                    await s3.put_object(
                        Bucket=config.bucket,
                        Key=config.object_key,
                        Body=body,
                        ContentType=_CONTENT_TYPES[config.format],
                    )
        except TimeoutError:
            raise UnavailableError(
                f"cannot upload the bundle to {where}: timed out after {CALL_TIMEOUT:g}s"
            ) from None
        except ClientError as error:
            code = _error_code(error)
            kind = PermissionDeniedError if code in _REFUSALS else UnavailableError
            raise kind(f"cannot upload the bundle to {where}: {code}") from None
        except BotoCoreError as error:
            raise UnavailableError(
                f"cannot upload the bundle to {where}: {type(error).__name__}: {error}"
            ) from None
