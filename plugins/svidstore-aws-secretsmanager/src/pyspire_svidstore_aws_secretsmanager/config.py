"""Settings of the ``aws_secretsmanager`` SVID store, with SPIRE's names."""

from __future__ import annotations

__all__ = ["SecretsManagerConfig"]

from collections.abc import Iterator
from dataclasses import dataclass

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue


@dataclass(frozen=True, kw_only=True)
class SecretsManagerConfig:
    """Where the secrets go and with which credentials."""

    region: str = setting(description="the AWS region the secrets are stored in")
    access_key_id: str = setting(
        "",
        description="AWS access key ID; empty: AWS_ACCESS_KEY_ID, else the SDK's default "
        "credential chain",
    )
    secret_access_key: str = setting(
        "",
        description="AWS secret access key; empty: AWS_SECRET_ACCESS_KEY, else the SDK's "
        "default credential chain",
        secret=True,
    )
    kms_key_id: str = setting(
        "",
        description="the KMS key (ID, ARN or alias) that encrypts the secrets this store "
        "creates, unless an entry names one with an `aws_secretsmanager:kmskeyid` selector; "
        "empty: the account's default key for Secrets Manager",
    )

    def validate(self) -> Iterator[ConfigIssue]:
        if not self.region:
            yield ConfigIssue("region", "region is required")
        if self.access_key_id and not self.secret_access_key:
            yield ConfigIssue(
                "secret_access_key",
                "configuration missing secret access key, but has access key id",
            )
        if self.secret_access_key and not self.access_key_id:
            yield ConfigIssue(
                "access_key_id", "configuration missing access key id, but has secret access key"
            )
