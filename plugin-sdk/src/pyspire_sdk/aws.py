"""AWS clients for plugins, through aiobotocore: credentials as SPIRE's AWS plugins take
them, one bound per call, failures as SDK errors.

:class:`AwsAccess` says how to reach a service: static keys when both halves are set (with a
session token, else ``AWS_SESSION_TOKEN``), else the SDK's default chain (environment, shared
files, the instance's role); with ``assume_role_arn`` those credentials only assume the role
through STS, and the role's fresh temporary credentials make the calls (so a client made for
each use never holds expired credentials); ``endpoint`` (else ``AWS_ENDPOINT_URL`` and the
per-service variables every AWS SDK reads) points the calls elsewhere. :func:`aws_client`
makes a client for one use; :func:`aws_call` bounds one call by :data:`CALL_TIMEOUT` and
turns what botocore raises into :class:`AwsCallError` (an
:class:`~pyspire_sdk.errors.UnavailableError` carrying AWS's error code). botocore's own
retries are off: a plugin's caller retries by the one backoff policy
(:mod:`pyspire_sdk.backoff`).

aiobotocore is imported when the first client is made, so a plugin that imports this module
loads no AWS SDK until it calls AWS; a plugin using it depends on ``aiobotocore`` itself.
"""

from __future__ import annotations

__all__ = ["CALL_TIMEOUT", "AwsAccess", "AwsCallError", "aws_call", "aws_client"]

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyspire_sdk.errors import UnavailableError

CALL_TIMEOUT = 20.0
"""Seconds one AWS call may take (SPIRE's AWS plugins use the same bound)."""

T = TypeVar("T")


class AwsCallError(UnavailableError):
    """An AWS call failed. ``code`` is AWS's error code (``ResourceNotFoundException``,
    ``AccessDenied``...), ``Timeout``, or the name of botocore's exception
    (``NoRegionError``, ``EndpointConnectionError``...)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AwsAccess:
    """How to reach an AWS service; empty strings are "not set". ``session_name`` names the
    STS session of an assumed role (it shows in the account's CloudTrail)."""

    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    assume_role_arn: str = ""
    endpoint: str = ""
    session_name: str = "pyspire"

    def static_credentials(self) -> dict[str, str]:
        """The static keys as aiobotocore takes them, or ``{}`` for the default chain."""
        if not (self.access_key_id and self.secret_access_key):
            return {}
        credentials = {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }
        token = self.session_token or os.environ.get("AWS_SESSION_TOKEN", "")
        if token:
            credentials["aws_session_token"] = token
        return credentials


@functools.cache
def _session() -> Any:
    """One botocore session per process: it caches the service models (a second or more to
    load for the large ones) for every client made later."""
    from aiobotocore.session import get_session

    return get_session()


def _failure(what: str, error: BaseException) -> AwsCallError:
    response = getattr(error, "response", None)
    details = response.get("Error", {}) if isinstance(response, Mapping) else {}
    code = str(details.get("Code", "") or type(error).__name__)
    message = str(details.get("Message", "") if details else error)
    return AwsCallError(f"failed to {what}: {code}: {message}" if message else code, code)


async def aws_call(what: str, call: Awaitable[T]) -> T:
    """``call`` bounded by :data:`CALL_TIMEOUT`; what botocore raises becomes
    :class:`AwsCallError` whose message starts ``failed to <what>``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await call
    except TimeoutError:
        raise AwsCallError(
            f"failed to {what}: timed out after {CALL_TIMEOUT:g}s", "Timeout"
        ) from None
    except (ClientError, BotoCoreError) as error:
        raise _failure(what, error) from None


def _config() -> Any:
    from aiobotocore.config import AioConfig

    return AioConfig(connect_timeout=5, read_timeout=CALL_TIMEOUT, retries={"max_attempts": 1})


async def _credentials(access: AwsAccess) -> dict[str, str]:
    """The static keys or default chain, or the temporary credentials of the assumed role."""
    static = access.static_credentials()
    if not access.assume_role_arn:
        return static
    async with _client("sts", access.region, {}, static) as sts:
        answer = await aws_call(
            f"assume role {access.assume_role_arn}",
            sts.assume_role(RoleArn=access.assume_role_arn, RoleSessionName=access.session_name),
        )
    issued = answer["Credentials"]
    return {
        "aws_access_key_id": issued["AccessKeyId"],
        "aws_secret_access_key": issued["SecretAccessKey"],
        "aws_session_token": issued["SessionToken"],
    }


@asynccontextmanager
async def _client(
    service: str, region: str, options: Mapping[str, str], credentials: Mapping[str, str]
) -> AsyncIterator[Any]:
    from botocore.exceptions import BotoCoreError

    try:
        context = _session().create_client(
            service, region_name=region or None, config=_config(), **options, **credentials
        )
        client = await context.__aenter__()
    except BotoCoreError as error:
        raise _failure(f"make a {service} client", error) from None
    try:
        yield client
    finally:
        await context.__aexit__(None, None, None)


@asynccontextmanager
async def aws_client(service: str, access: AwsAccess) -> AsyncIterator[Any]:
    """A client of ``service`` (botocore's name: ``secretsmanager``, ``acm-pca``...) for
    ``access``, closed when the block ends. :class:`AwsCallError` when the role cannot be
    assumed or the client cannot be made (``NoRegionError`` with no region anywhere)."""
    credentials = await _credentials(access)
    options = {"endpoint_url": access.endpoint} if access.endpoint else {}
    async with _client(service, access.region, options, credentials) as client:
        yield client
