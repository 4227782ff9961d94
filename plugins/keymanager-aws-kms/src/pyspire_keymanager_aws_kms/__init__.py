"""The ``aws_kms`` key manager: the server's keys live in AWS KMS and never leave it."""

from pyspire_keymanager_aws_kms.config import AwsKmsKeyManagerConfig
from pyspire_keymanager_aws_kms.plugin import AwsKmsKeyManager

__all__ = ["AwsKmsKeyManager", "AwsKmsKeyManagerConfig"]
