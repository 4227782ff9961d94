"""The calls to AWS Private CA (ACM PCA) through aiobotocore.

Clients are made for each use (the server mints a CA hours apart): with ``assume_role_arn``
the SDK's default credentials first assume the role through STS, whose fresh temporary
credentials then make the calls, so nothing expires between mints. ``endpoint`` (else
``AWS_ENDPOINT_URL``) points the calls elsewhere. Each call is bounded by
:data:`CALL_TIMEOUT` and made once (botocore's own retries are off: a failed mint is retried by
the server under the one backoff policy); the wait for an issued certificate polls
GetCertificate by :data:`WAIT_POLICY`, on the host's clock, for at most :data:`WAIT_LIMIT`.
aiobotocore is imported when the first client is made.
"""

from __future__ import annotations

__all__ = [
    "CALL_TIMEOUT",
    "WAIT_LIMIT",
    "WAIT_POLICY",
    "AwsCallError",
    "CaCertificate",
    "PcaAccess",
    "PrivateCa",
    "private_ca",
]

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import UnavailableError

CALL_TIMEOUT = 20.0
"""Seconds one AWS call may take."""

WAIT_POLICY = BackoffPolicy(initial=1.0, maximum=10.0)
"""How often GetCertificate is asked again while the certificate is being issued."""

WAIT_LIMIT = timedelta(minutes=5)
"""How long a certificate may take to be issued before the mint fails."""

_SESSION_NAME = "pyspire-aws-pca"
_IN_PROGRESS = "RequestInProgressException"
T = TypeVar("T")


class AwsCallError(UnavailableError):
    """An ACM PCA or STS call failed; ``code`` is AWS's error code (``ValidationException``,
    ``AccessDeniedException``...) or the client's exception name."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PcaAccess:
    """How to reach the private CA (empty strings: not set)."""

    region: str
    endpoint: str = ""
    assume_role_arn: str = ""


@dataclass(frozen=True)
class CaCertificate:
    """GetCertificateAuthorityCertificate's answer: the CA's certificate and the chain above
    it (PEM, each certificate signed by the next; empty for a root CA)."""

    certificate: str
    chain: str


@functools.cache
def _session() -> Any:
    """One botocore session per process: it caches the service models for later clients."""
    from aiobotocore.session import get_session

    return get_session()


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    details = response.get("Error", {}) if isinstance(response, Mapping) else {}
    return str(details.get("Code", "") or type(error).__name__)


def _reason(error: BaseException) -> str:
    response = getattr(error, "response", None)
    details = response.get("Error", {}) if isinstance(response, Mapping) else {}
    message = str(details.get("Message", "") if details else error)
    code = _error_code(error)
    return f"{code}: {message}" if message else code


async def _call(what: str, call: Awaitable[T]) -> T:
    """``call`` bounded by :data:`CALL_TIMEOUT`; failures become :class:`AwsCallError`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await call
    except TimeoutError:
        raise AwsCallError(
            f"failed to {what}: timed out after {CALL_TIMEOUT:g}s", "Timeout"
        ) from None
    except (ClientError, BotoCoreError) as error:
        raise AwsCallError(f"failed to {what}: {_reason(error)}", _error_code(error)) from None


class PrivateCa:
    """The calls the plugin makes on one ACM PCA client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def describe(self, ca_arn: str) -> Mapping[str, Any]:
        """DescribeCertificateAuthority's ``CertificateAuthority``."""
        answer = await _call(
            "describe the certificate authority",
            self._client.describe_certificate_authority(CertificateAuthorityArn=ca_arn),
        )
        return dict(answer.get("CertificateAuthority") or {})

    async def ca_certificate(self, ca_arn: str) -> CaCertificate:
        """GetCertificateAuthorityCertificate."""
        answer = await _call(
            "get the certificate authority certificate",
            self._client.get_certificate_authority_certificate(CertificateAuthorityArn=ca_arn),
        )
        return CaCertificate(
            certificate=str(answer.get("Certificate") or ""),
            chain=str(answer.get("CertificateChain") or ""),
        )

    async def issue(
        self,
        ca_arn: str,
        csr_pem: bytes,
        *,
        signing_algorithm: str,
        template_arn: str,
        not_after: datetime,
    ) -> str:
        """IssueCertificate with an absolute end of validity; the new certificate's ARN."""
        answer = await _call(
            "issue the certificate",
            self._client.issue_certificate(
                CertificateAuthorityArn=ca_arn,
                Csr=csr_pem,
                SigningAlgorithm=signing_algorithm,
                TemplateArn=template_arn,
                Validity={"Type": "ABSOLUTE", "Value": int(not_after.timestamp())},
            ),
        )
        return str(answer["CertificateArn"])

    async def wait_for_certificate(self, ca_arn: str, certificate_arn: str, clock: Clock) -> str:
        """The issued certificate (PEM), asking GetCertificate again by :data:`WAIT_POLICY`
        while it is being issued, for at most :data:`WAIT_LIMIT` of ``clock``'s time."""
        deadline = clock.now() + WAIT_LIMIT
        backoff = Backoff(WAIT_POLICY)
        while True:
            try:
                answer = await _call(
                    "get the issued certificate",
                    self._client.get_certificate(
                        CertificateAuthorityArn=ca_arn, CertificateArn=certificate_arn
                    ),
                )
            except AwsCallError as error:
                if error.code != _IN_PROGRESS:
                    raise
                delay = backoff.failed()
                if clock.now() + timedelta(seconds=delay) > deadline:
                    raise AwsCallError(
                        f"certificate {certificate_arn} was not issued within "
                        f"{WAIT_LIMIT.total_seconds():g}s",
                        _IN_PROGRESS,
                    ) from None
                await clock.sleep(delay)
                continue
            return str(answer.get("Certificate") or "")


async def _assumed_credentials(access: PcaAccess, config: Any) -> dict[str, str]:
    async with _session().create_client("sts", region_name=access.region, config=config) as sts:
        answer = await _call(
            f"assume role {access.assume_role_arn}",
            sts.assume_role(RoleArn=access.assume_role_arn, RoleSessionName=_SESSION_NAME),
        )
    issued = answer["Credentials"]
    return {
        "aws_access_key_id": issued["AccessKeyId"],
        "aws_secret_access_key": issued["SecretAccessKey"],
        "aws_session_token": issued["SessionToken"],
    }


@asynccontextmanager
async def private_ca(access: PcaAccess) -> AsyncIterator[PrivateCa]:
    """An ACM PCA client for ``access``, closed when the block ends; :class:`AwsCallError`
    when the role cannot be assumed."""
    from aiobotocore.config import AioConfig

    config = AioConfig(connect_timeout=5, read_timeout=CALL_TIMEOUT, retries={"max_attempts": 1})
    credentials: dict[str, str] = {}
    if access.assume_role_arn:
        credentials = await _assumed_credentials(access, config)
    options: dict[str, Any] = {"endpoint_url": access.endpoint} if access.endpoint else {}
    async with _session().create_client(
        "acm-pca", region_name=access.region, config=config, **options, **credentials
    ) as client:
        yield PrivateCa(client)
