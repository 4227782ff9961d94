"""Reading the upstream CA's PEM material from AWS Secrets Manager.

Credentials are SPIRE's ``awssecret``'s, as :mod:`pyspire_sdk.aws` takes them: the static keys
when both halves are set (with ``secret_token``, else ``AWS_SESSION_TOKEN``), else the SDK's
default chain; with ``assume_role_arn`` the role's. The secrets are read when the plugin is
configured, so a failure here is a configuration error naming the setting that decides: the
secret's ARN (not found, access denied, no ``SecretString``, AWS unreachable),
``assume_role_arn`` (the role cannot be assumed) or ``region`` (none anywhere).
"""

from __future__ import annotations

__all__ = ["read_secrets"]

from collections.abc import Mapping
from typing import Any

from pyspire_sdk.aws import AwsAccess, AwsCallError, aws_call, aws_client
from pyspire_sdk.errors import ConfigError, ConfigIssue


async def _read(client: Any, field_name: str, arn: str) -> bytes:
    """The secret's string, as bytes; ConfigError naming ``field_name`` otherwise."""
    try:
        answer = await aws_call(f"read {arn}", client.get_secret_value(SecretId=arn))
    except AwsCallError as error:
        raise ConfigError([ConfigIssue(field_name, f"unable to read {arn}: {error}")]) from None
    value = answer.get("SecretString")
    if not isinstance(value, str):
        raise ConfigError(
            [ConfigIssue(field_name, f"unable to read {arn}: the secret holds no SecretString")]
        )
    return value.encode()


async def read_secrets(access: AwsAccess, arns: Mapping[str, str]) -> dict[str, bytes]:
    """The string of each secret of ``arns`` (setting name → ARN), by setting name.

    Raises :class:`~pyspire_sdk.errors.ConfigError` naming the setting that decides, with
    AWS's reason.
    """
    try:
        async with aws_client("secretsmanager", access) as client:
            return {name: await _read(client, name, arn) for name, arn in arns.items()}
    except AwsCallError as error:
        if error.code == "NoRegionError":
            reason = "no region is set here nor in the environment (AWS_REGION)"
            raise ConfigError([ConfigIssue("region", reason)]) from None
        field = "assume_role_arn" if access.assume_role_arn else next(iter(arns), "region")
        raise ConfigError([ConfigIssue(field, str(error))]) from None
