"""Settings of the ``aws_secretsmanager`` SVID store, with SPIRE's names."""

from __future__ import annotations

__all__ = ["SecretsManagerConfig"]

from collections.abc import Iterator
from dataclasses import dataclass

from pyspire_sdk.aws import key_pair_issues
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
        yield from key_pair_issues(self.access_key_id, self.secret_access_key)
