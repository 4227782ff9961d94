"""The ``aws_secretsmanager`` SVID store: stored X509-SVIDs as AWS Secrets Manager secrets."""

from pyspire_svidstore_aws_secretsmanager.config import SecretsManagerConfig
from pyspire_svidstore_aws_secretsmanager.metadata import SecretOptions
from pyspire_svidstore_aws_secretsmanager.secret import encode_secret
from pyspire_svidstore_aws_secretsmanager.store import SecretsManagerStore

__all__ = ["SecretOptions", "SecretsManagerConfig", "SecretsManagerStore", "encode_secret"]
