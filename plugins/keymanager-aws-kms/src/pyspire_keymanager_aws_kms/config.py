"""Settings of the ``aws_kms`` key manager (SPIRE's keys)."""

from __future__ import annotations

__all__ = ["AwsKmsKeyManagerConfig"]

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.aws import key_pair_issues
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue


@dataclass(frozen=True, kw_only=True)
class AwsKmsKeyManagerConfig:
    """Where the keys live (region, credentials), who this server is among the servers of its
    trust domain, and the policy new keys get."""

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
    region: str = setting(description="the AWS region where the keys are made and used")
    key_identifier_file: Path | None = setting(
        None,
        description="file holding this server's ID, which names its keys' aliases; made "
        "(mode 0600) with a new random ID when missing; relative paths are below the data "
        "directory; exactly one of this and `key_identifier_value` is required",
    )
    key_identifier_value: str = setting(
        "",
        description="this server's ID, which names its keys' aliases (letters, digits, `-` "
        "and `_`); exactly one of this and `key_identifier_file` is required",
    )
    key_policy_file: Path | None = setting(
        None,
        description="JSON file with the key policy given to every new key (relative paths "
        "are below the data directory); unset: the account's default policy",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """Rules across keys: a region, one server ID source, both halves of a key pair."""
        if not self.region.strip():
            yield ConfigIssue("region", "configuration is missing a region")
        if self.key_identifier_file is None and not self.key_identifier_value:
            yield ConfigIssue(
                "key_identifier_file",
                "configuration requires a key identifier file or a key identifier value",
            )
        if self.key_identifier_file is not None and self.key_identifier_value:
            yield ConfigIssue(
                "key_identifier_value",
                "configuration can't have a key identifier file and a key identifier value "
                "at the same time",
            )
        if self.key_identifier_value and not _is_alias_safe(self.key_identifier_value):
            yield ConfigIssue(
                "key_identifier_value",
                "may hold only letters, digits, '-' and '_' (it becomes part of a KMS alias)",
            )
        yield from key_pair_issues(self.access_key_id, self.secret_access_key)


def _is_alias_safe(value: str) -> bool:
    return len(value) <= 64 and all(
        character.isascii() and (character.isalnum() or character in "-_") for character in value
    )
