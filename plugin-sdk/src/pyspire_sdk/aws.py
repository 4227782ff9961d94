"""AWS clients for plugins, through aiobotocore: credentials as SPIRE's AWS plugins take
them, one bound per call, failures as SDK errors.

:class:`AwsAccess` says how to reach a service: static keys when both halves are set (with
``session_token`` if given), else the SDK's default chain (environment, shared
files, the instance's role); with ``assume_role_arn`` those credentials only assume the role
through STS, and the role's fresh temporary credentials make the calls (so a client made for
each use never holds expired credentials); ``endpoint`` (else ``AWS_ENDPOINT_URL`` and the
per-service variables every AWS SDK reads) points the calls elsewhere; a plugin's settings
check the key pair by :func:`key_pair_issues`. :func:`aws_client`
makes a client for one use; :class:`AwsClients` keeps clients for a plugin's lifetime and makes
them again :data:`RENEW_BEFORE` an assumed role's credentials expire (by the injected clock).
:func:`aws_call` bounds one call by :data:`CALL_TIMEOUT` and turns what botocore raises into
:class:`AwsCallError` (an :class:`~pyspire_sdk.errors.UnavailableError` carrying AWS's error
code), or into the SDK error a plugin maps AWS's code to (:data:`REFUSALS` is the usual map).
botocore's own retries are off: a plugin's caller retries by the one backoff policy
(:mod:`pyspire_sdk.backoff`).

aiobotocore is imported when the first client is made, so a plugin that imports this module
loads no AWS SDK until it calls AWS; a plugin using it depends on ``aiobotocore`` itself.
"""

from __future__ import annotations

__all__ = [
    "CALL_TIMEOUT",
    "REFUSALS",
    "RENEW_BEFORE",
    "AwsAccess",
    "AwsCallError",
    "AwsClients",
    "aws_call",
    "aws_client",
    "key_pair_issues",
]

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.errors import (
    ConfigIssue,
    InvalidArgumentError,
    PermissionDeniedError,
    PyspireError,
    UnavailableError,
)

CALL_TIMEOUT = 20.0
"""Seconds one AWS call may take (SPIRE's AWS plugins use the same bound)."""

RENEW_BEFORE = timedelta(minutes=5)
"""How long before an assumed role's credentials expire :class:`AwsClients` makes its clients
again (SPIRE's margin), so no call is made with credentials about to lapse."""

REFUSALS: Mapping[str, type[PyspireError]] = {
    **dict.fromkeys(
        (
            "AccessDeniedException",
            "AccessDenied",
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "ExpiredTokenException",
            # S3's names for the same refusals.
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
        ),
        PermissionDeniedError,
    ),
    **dict.fromkeys(("InvalidParameterException", "ValidationException"), InvalidArgumentError),
}
"""AWS error codes that no retry will cure, as :func:`aws_call`'s ``errors``: credentials AWS
does not accept or that may not act are :class:`~pyspire_sdk.errors.PermissionDeniedError`, a
request AWS refuses as malformed is :class:`~pyspire_sdk.errors.InvalidArgumentError`."""

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

    def endpoint_option(self) -> dict[str, str]:
        """``endpoint`` as aiobotocore takes it, or ``{}`` for the environment's."""
        return {"endpoint_url": self.endpoint} if self.endpoint else {}

    def static_credentials(self) -> dict[str, str]:
        """The static keys as aiobotocore takes them, or ``{}`` for the default chain."""
        if not (self.access_key_id and self.secret_access_key):
            return {}
        credentials = {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }
        if self.session_token:
            credentials["aws_session_token"] = self.session_token
        return credentials


def key_pair_issues(access_key_id: str, secret_access_key: str) -> Iterator[ConfigIssue]:
    """SPIRE's rule for the ``access_key_id`` and ``secret_access_key`` settings of an AWS
    plugin: both or neither (one half alone would silently fall back to the default chain)."""
    if access_key_id and not secret_access_key:
        yield ConfigIssue(
            "secret_access_key", "configuration missing secret access key, but has access key id"
        )
    if secret_access_key and not access_key_id:
        yield ConfigIssue(
            "access_key_id", "configuration missing access key id, but has secret access key"
        )


@functools.cache
def _session() -> Any:
    """One botocore session per process: it caches the service models (a second or more to
    load for the large ones) for every client made later."""
    from aiobotocore.session import get_session

    return get_session()


def _failure(
    what: str, error: BaseException, errors: Mapping[str, type[PyspireError]]
) -> PyspireError:
    response = getattr(error, "response", None)
    details = response.get("Error", {}) if isinstance(response, Mapping) else {}
    code = str(details.get("Code", "") or type(error).__name__)
    message = str(details.get("Message", "") if details else error)
    text = f"failed to {what}: {code}: {message}" if message else f"failed to {what}: {code}"
    mapped = errors.get(code)
    return mapped(text) if mapped is not None else AwsCallError(text, code)


async def aws_call(
    what: str, call: Awaitable[T], errors: Mapping[str, type[PyspireError]] | None = None
) -> T:
    """``call`` bounded by :data:`CALL_TIMEOUT`. What botocore raises becomes the error class
    ``errors`` maps AWS's code to (e.g. :data:`REFUSALS`), else :class:`AwsCallError`; either
    way the message reads ``failed to <what>: <code>: <AWS's message>``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await call
    except TimeoutError:
        raise AwsCallError(
            f"failed to {what}: timed out after {CALL_TIMEOUT:g}s", "Timeout"
        ) from None
    except (ClientError, BotoCoreError) as error:
        raise _failure(what, error, errors or {}) from None


def _config() -> Any:
    from aiobotocore.config import AioConfig

    # total_max_attempts counts the first attempt: 1 is one request and no retry.
    return AioConfig(
        connect_timeout=5,
        read_timeout=CALL_TIMEOUT,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )


async def _credentials(access: AwsAccess) -> tuple[dict[str, str], datetime | None]:
    """The static keys or default chain, or the temporary credentials of the assumed role;
    and when the latter expire (``None``: the SDK's chain renews them itself)."""
    static = access.static_credentials()
    if not access.assume_role_arn:
        return static, None
    async with _client("sts", access.region, {}, static) as sts:
        answer = await aws_call(
            f"assume role {access.assume_role_arn}",
            sts.assume_role(RoleArn=access.assume_role_arn, RoleSessionName=access.session_name),
        )
    issued = answer["Credentials"]
    expiration = issued.get("Expiration")
    assumed = {
        "aws_access_key_id": issued["AccessKeyId"],
        "aws_secret_access_key": issued["SecretAccessKey"],
        "aws_session_token": issued["SessionToken"],
    }
    return assumed, expiration if isinstance(expiration, datetime) else None


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
        raise _failure(f"make a {service} client", error, {}) from None
    try:
        yield client
    finally:
        await context.__aexit__(None, None, None)


@asynccontextmanager
async def aws_client(service: str, access: AwsAccess) -> AsyncIterator[Any]:
    """A client of ``service`` (botocore's name: ``secretsmanager``, ``acm-pca``...) for
    ``access``, closed when the block ends. :class:`AwsCallError` when the role cannot be
    assumed or the client cannot be made (``NoRegionError`` with no region anywhere)."""
    credentials, _ = await _credentials(access)
    async with _client(service, access.region, access.endpoint_option(), credentials) as client:
        yield client


@dataclass
class _Kept:
    """The clients made with one set of credentials, closed together."""

    credentials: dict[str, str]
    expires_at: datetime | None
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    clients: dict[str, Any] = field(default_factory=dict)


class AwsClients:
    """Clients kept for reuse by a plugin that calls AWS often (an attestor, a key manager, a
    store), closed by :meth:`close`. The clients of one :class:`AwsAccess` share its
    credentials: the role is assumed once for all of them, and all are made again when
    ``clock`` reaches :data:`RENEW_BEFORE` before those credentials expire."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._kept: dict[AwsAccess, _Kept] = {}
        self._locks: dict[AwsAccess, asyncio.Lock] = {}

    async def client(self, service: str, access: AwsAccess) -> Any:
        """The kept client of ``service`` for ``access``, made (or made again) as needed;
        :class:`AwsCallError` as for :func:`aws_client`."""
        async with self._locks.setdefault(access, asyncio.Lock()):
            kept = await self._current(access)
            if service not in kept.clients:
                kept.clients[service] = await kept.stack.enter_async_context(
                    _client(service, access.region, access.endpoint_option(), kept.credentials)
                )
            return kept.clients[service]

    async def _current(self, access: AwsAccess) -> _Kept:
        kept = self._kept.get(access)
        if kept is not None:
            if kept.expires_at is None or self._clock.now() < kept.expires_at - RENEW_BEFORE:
                return kept
            del self._kept[access]
            await kept.stack.aclose()
        credentials, expires_at = await _credentials(access)
        kept = self._kept[access] = _Kept(credentials, expires_at)
        return kept

    async def close(self) -> None:
        """Close every client; later calls of :meth:`client` make new ones."""
        kept, self._kept = self._kept, {}
        for entry in kept.values():
            await entry.stack.aclose()
