"""Reading the upstream CA's PEM material from AWS Secrets Manager through aiobotocore.

Credentials as SPIRE's ``awssecret`` takes them: ``access_key_id`` and ``secret_access_key``
(with ``secret_token``, else ``AWS_SESSION_TOKEN``) when both are set, else the SDK's default
chain (environment, shared files, the instance's role); with ``assume_role_arn``, those
credentials only assume the role, whose temporary credentials then read the secrets.
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_SECRETS_MANAGER``) points the calls elsewhere, as
for every AWS SDK. Each call is bounded by :data:`CALL_TIMEOUT` and made once (botocore's own
retries are off): the secrets are read when the plugin is configured, and a failure there is a
configuration error naming the setting whose secret could not be read. aiobotocore is imported
at the first read, so loading the plugin does not import it.
"""

from __future__ import annotations

__all__ = ["CALL_TIMEOUT", "AwsAccess", "read_secrets"]

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspire_sdk.errors import ConfigError, ConfigIssue

CALL_TIMEOUT = 20.0
"""Seconds one AWS call may take."""

_SESSION_NAME = "pyspire-awssecret"


@dataclass(frozen=True)
class AwsAccess:
    """How to reach Secrets Manager (empty strings: not set)."""

    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    secret_token: str = field(default="", repr=False)
    assume_role_arn: str = ""

    def static_credentials(self) -> dict[str, str]:
        """The static keys as aiobotocore takes them, or ``{}`` for the default chain."""
        if not (self.access_key_id and self.secret_access_key):
            return {}
        credentials = {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }
        token = self.secret_token or os.environ.get("AWS_SESSION_TOKEN", "")
        if token:
            credentials["aws_session_token"] = token
        return credentials


def _reason(error: BaseException) -> str:
    response = getattr(error, "response", None)
    details = response.get("Error", {}) if isinstance(response, Mapping) else {}
    code = str(details.get("Code", "") or type(error).__name__)
    message = str(details.get("Message", "") if details else error)
    return f"{code}: {message}" if message else code


@asynccontextmanager
async def _client(access: AwsAccess, where: str) -> AsyncIterator[Any]:
    """A Secrets Manager client; ConfigError naming ``where`` (the setting that decides) when
    the role cannot be assumed or no region is known."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

    session = get_session()
    config = AioConfig(connect_timeout=5, read_timeout=CALL_TIMEOUT, retries={"max_attempts": 1})
    region = access.region or None
    credentials: dict[str, str] = access.static_credentials()
    try:
        if access.assume_role_arn:
            where = "assume_role_arn"
            async with session.create_client(
                "sts", region_name=region, config=config, **credentials
            ) as sts:
                async with asyncio.timeout(CALL_TIMEOUT):
                    answer = await sts.assume_role(
                        RoleArn=access.assume_role_arn, RoleSessionName=_SESSION_NAME
                    )
            issued = answer["Credentials"]
            credentials = {
                "aws_access_key_id": issued["AccessKeyId"],
                "aws_secret_access_key": issued["SecretAccessKey"],
                "aws_session_token": issued["SessionToken"],
            }
        async with session.create_client(
            "secretsmanager", region_name=region, config=config, **credentials
        ) as client:
            yield client
    except NoRegionError:
        raise ConfigError(
            [ConfigIssue("region", "no region is set here nor in the environment (AWS_REGION)")]
        ) from None
    except TimeoutError:
        raise ConfigError(
            [ConfigIssue(where, f"AWS did not answer within {CALL_TIMEOUT:g}s")]
        ) from None
    except (ClientError, BotoCoreError) as error:
        raise ConfigError([ConfigIssue(where, f"failed to reach AWS: {_reason(error)}")]) from None


async def _read(client: Any, field_name: str, arn: str) -> bytes:
    """The secret's string, as bytes; ConfigError naming ``field_name`` otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            answer = await client.get_secret_value(SecretId=arn)
    except TimeoutError:
        reason = f"AWS did not answer within {CALL_TIMEOUT:g}s"
        raise ConfigError([ConfigIssue(field_name, f"unable to read {arn}: {reason}")]) from None
    except (ClientError, BotoCoreError) as error:
        raise ConfigError(
            [ConfigIssue(field_name, f"unable to read {arn}: {_reason(error)}")]
        ) from None
    value = answer.get("SecretString")
    if not isinstance(value, str):
        raise ConfigError(
            [ConfigIssue(field_name, f"unable to read {arn}: the secret holds no SecretString")]
        )
    return value.encode()


async def read_secrets(access: AwsAccess, arns: Mapping[str, str]) -> dict[str, bytes]:
    """The string of each secret of ``arns`` (setting name → ARN), by setting name.

    Raises :class:`~pyspire_sdk.errors.ConfigError` naming the setting whose secret could not
    be read, with AWS's reason (not found, access denied, unreachable...).
    """
    first = next(iter(arns), "region")
    async with _client(access, first) as client:
        return {name: await _read(client, name, arn) for name, arn in arns.items()}
