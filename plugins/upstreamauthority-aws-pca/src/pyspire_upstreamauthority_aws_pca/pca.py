"""The calls to AWS Private CA (ACM PCA).

Clients are made for each use (the server mints a CA hours apart) by :mod:`pyspire_sdk.aws`:
with ``assume_role_arn`` the SDK's default credentials first assume the role, whose fresh
temporary credentials then make the calls, so nothing expires between mints; ``endpoint``
(else ``AWS_ENDPOINT_URL``) points the calls elsewhere. Each call is bounded and made once (a
failed mint is retried by the server under the one backoff policy); the wait for an issued
certificate polls GetCertificate by :data:`WAIT_POLICY`, on the host's clock, for at most
:data:`WAIT_LIMIT`.
"""

from __future__ import annotations

__all__ = ["WAIT_LIMIT", "WAIT_POLICY", "CaCertificate", "PrivateCa", "private_ca"]

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pyspire_sdk.aws import AwsAccess, AwsCallError, aws_call, aws_client
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.clock import Clock

WAIT_POLICY = BackoffPolicy(initial=1.0, maximum=10.0)
"""How often GetCertificate is asked again while the certificate is being issued."""

WAIT_LIMIT = timedelta(minutes=5)
"""How long a certificate may take to be issued before the mint fails."""

_IN_PROGRESS = "RequestInProgressException"


@dataclass(frozen=True)
class CaCertificate:
    """GetCertificateAuthorityCertificate's answer: the CA's certificate and the chain above
    it (PEM, each certificate signed by the next; empty for a root CA)."""

    certificate: str
    chain: str


class PrivateCa:
    """The calls the plugin makes on one ACM PCA client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def describe(self, ca_arn: str) -> Mapping[str, Any]:
        """DescribeCertificateAuthority's ``CertificateAuthority``."""
        answer = await aws_call(
            "describe the certificate authority",
            self._client.describe_certificate_authority(CertificateAuthorityArn=ca_arn),
        )
        return dict(answer.get("CertificateAuthority") or {})

    async def ca_certificate(self, ca_arn: str) -> CaCertificate:
        """GetCertificateAuthorityCertificate."""
        answer = await aws_call(
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
        answer = await aws_call(
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
                answer = await aws_call(
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


@asynccontextmanager
async def private_ca(access: AwsAccess) -> AsyncIterator[PrivateCa]:
    """An ACM PCA client for ``access``, closed when the block ends;
    :class:`~pyspire_sdk.aws.AwsCallError` when the role cannot be assumed."""
    async with aws_client("acm-pca", access) as client:
        yield PrivateCa(client)
