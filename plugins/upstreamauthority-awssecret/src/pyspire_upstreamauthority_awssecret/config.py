"""The settings of the ``awssecret`` upstream authority, with SPIRE's keys."""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "AwsSecretUpstreamConfig"]

from collections.abc import Iterable
from dataclasses import dataclass

from pyspire_sdk.aws import key_pair_issues
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue

PLUGIN_NAME = "awssecret"


@dataclass(frozen=True, kw_only=True)
class AwsSecretUpstreamConfig:
    """``[server.plugins.upstream_authority.awssecret]``."""

    region: str = setting(
        "", description="AWS region of the secrets; empty: the SDK's default (AWS_REGION, ...)"
    )
    cert_file_arn: str = setting(
        description="ARN of the secret holding the PEM certificates: the upstream CA that signs "
        "the server's CA first, then the intermediates between it and the roots of "
        "`bundle_file_arn`"
    )
    key_file_arn: str = setting(
        description="ARN of the secret holding the PEM private key of the first certificate "
        "(PKCS#8, PKCS#1 or SEC 1, unencrypted)"
    )
    bundle_file_arn: str = setting(
        "",
        description="ARN of the secret holding the PEM upstream roots, which become the trust "
        "bundle's X.509 authorities; empty means `cert_file_arn` holds one self-signed CA, "
        "which is then the root",
    )
    access_key_id: str = setting(
        "", description="AWS access key ID; empty: the SDK's default credential chain"
    )
    secret_access_key: str = setting(
        "",
        description="AWS secret access key, with `access_key_id`; never logged",
        secret=True,
    )
    secret_token: str = setting(
        "",
        description="AWS session token of temporary keys, with `access_key_id`; empty: "
        "AWS_SESSION_TOKEN",
        secret=True,
    )
    assume_role_arn: str = setting(
        "",
        description="ARN of a role assumed (through STS, with the credentials above) before "
        "reading the secrets; empty: none",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """Rules across keys: both ARNs named, both halves of a key pair."""
        for field in ("cert_file_arn", "key_file_arn"):
            if not getattr(self, field).strip():
                yield ConfigIssue(field, "must name the ARN of a secret")
        yield from key_pair_issues(self.access_key_id, self.secret_access_key)
