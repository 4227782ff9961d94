"""The settings of ``aws_s3``, with SPIRE's keys."""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "AwsS3Config"]

from collections.abc import Iterable
from dataclasses import dataclass

from pyspire_sdk.aws import key_pair_issues
from pyspire_sdk.bundle_formats import BundleFormat
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue

PLUGIN_NAME = "aws_s3"
"""How operators name the publisher: ``[server.plugins.bundle_publisher.aws_s3]``."""


@dataclass(frozen=True, kw_only=True)
class AwsS3Config:
    """Settings of the ``aws_s3`` bundle publisher."""

    region: str = setting(description="AWS region of the bucket")
    bucket: str = setting(description="the S3 bucket the trust bundle is uploaded to")
    object_key: str = setting(description="the key of the object inside the bucket")
    format: BundleFormat = setting(
        description="`spiffe` (SPIFFE bundle document), `jwks` (plain JWK Set of X.509 and JWT "
        "authorities) or `pem` (X.509 authorities only)"
    )
    access_key_id: str = setting(
        "",
        description="AWS access key ID; when empty, the AWS SDK's default chain (environment, "
        "shared files, instance role) is used",
    )
    secret_access_key: str = setting(
        "", description="AWS secret access key, set together with `access_key_id`", secret=True
    )
    endpoint: str = setting(
        "",
        description="a custom S3 endpoint URL, for S3-compatible stores such as MinIO; empty "
        "means AWS (or `AWS_ENDPOINT_URL`)",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """Names must not be empty, and static credentials come as a pair."""
        for key in ("region", "bucket", "object_key"):
            if not getattr(self, key).strip():
                yield ConfigIssue(key, "must not be empty")
        yield from key_pair_issues(self.access_key_id, self.secret_access_key)
        if self.endpoint and not self.endpoint.startswith(("https://", "http://")):
            yield ConfigIssue("endpoint", "must be an http:// or https:// URL")
