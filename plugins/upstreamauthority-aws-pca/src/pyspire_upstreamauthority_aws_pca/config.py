"""The settings of the ``aws_pca`` upstream authority, with SPIRE's keys."""

from __future__ import annotations

__all__ = ["DEFAULT_CA_SIGNING_TEMPLATE_ARN", "PLUGIN_NAME", "AwsPcaUpstreamConfig"]

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue

PLUGIN_NAME = "aws_pca"

DEFAULT_CA_SIGNING_TEMPLATE_ARN = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"
"""SPIRE's default template: the server's CA may sign end-entity SVIDs only."""


@dataclass(frozen=True, kw_only=True)
class AwsPcaUpstreamConfig:
    """``[server.plugins.upstream_authority.aws_pca]``."""

    region: str = setting(description="AWS region of the private CA")
    certificate_authority_arn: str = setting(
        description="ARN of the AWS Private CA that signs the server's CA"
    )
    signing_algorithm: str = setting(
        "",
        description="signing algorithm of the issued CA certificates (`SHA256WITHECDSA`, "
        "`SHA256WITHRSA`, ...); empty: the private CA's own",
    )
    ca_signing_template_arn: str = setting(
        "",
        description="ARN of the certificate template the server's CA is issued with; empty: "
        f"`{DEFAULT_CA_SIGNING_TEMPLATE_ARN}` (path length 0: the server's CA signs SVIDs "
        "only)",
    )
    assume_role_arn: str = setting(
        "",
        description="ARN of a role assumed (through STS, with the SDK's default credentials) "
        "before calling the private CA; empty: none",
    )
    endpoint: str = setting(
        "",
        description="URL of the ACM PCA API to call instead of the region's (a VPC endpoint, "
        "say); empty: AWS_ENDPOINT_URL, else the region's",
    )
    supplemental_bundle_path: Path | None = setting(
        None,
        description="PEM certificates added to the trust bundle next to the private CA's root "
        "(during a migration between roots, say); unset: none",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """Rules on values: a region and an ARN named, an endpoint that is an HTTP(S) URL."""
        if not self.region.strip():
            yield ConfigIssue("region", "configuration is missing a region")
        if not self.certificate_authority_arn.strip():
            yield ConfigIssue(
                "certificate_authority_arn", "configuration is missing a certificate authority ARN"
            )
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                yield ConfigIssue("endpoint", f"{self.endpoint!r} is not an http(s) URL")
