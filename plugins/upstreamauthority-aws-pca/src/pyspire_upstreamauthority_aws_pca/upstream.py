"""The ``aws_pca`` upstream authority, as SPIRE's ``upstreamauthority/awspca``.

At configure the private CA is looked up (DescribeCertificateAuthority): one that does not
answer is refused naming ``certificate_authority_arn``; one that is not ACTIVE is reported as a
warning (it may be activated later), and its signing algorithm is used when
``signing_algorithm`` is empty. Each mint checks the CSR by SPIRE's rules (so nothing malformed
reaches a paid API), reads the private CA's certificate and chain
(GetCertificateAuthorityCertificate), issues the server's CA (IssueCertificate with the
template, the algorithm and an absolute end: the preferred TTL, never past the private CA's own
end, which AWS would refuse), waits until it is issued (GetCertificate) and answers with the
chain: the new CA, the private CA and the intermediates above it; the last certificate of the
private CA's chain (the private CA itself when it is a root) is the root, joined by the
certificates of ``supplemental_bundle_path``.

JWT keys are not published upstream (``publish_jwt_key`` returns ``[]``) and the roots change
only through what each mint returns.
"""

from __future__ import annotations

__all__ = ["AwsPcaUpstreamAuthority"]

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire_sdk.aws import AwsAccess, AwsCallError
from pyspire_sdk.bundle import JwtAuthority
from pyspire_sdk.errors import (
    ConfigError,
    ConfigIssue,
    PermissionDeniedError,
    PluginError,
    UnavailableError,
)
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.upstream_authority import UpstreamBundle, UpstreamX509CA
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.upstream_ca import DEFAULT_CA_TTL, no_bundle_updates, validate_ca_csr
from pyspire_upstreamauthority_aws_pca.config import (
    DEFAULT_CA_SIGNING_TEMPLATE_ARN,
    AwsPcaUpstreamConfig,
)
from pyspire_upstreamauthority_aws_pca.pca import CaCertificate, private_ca

_DER = serialization.Encoding.DER


def _load_supplemental(path: Path) -> tuple[x509.Certificate, ...]:
    """Blocking: the certificates of ``supplemental_bundle_path``."""
    try:
        return tuple(x509.load_pem_x509_certificates(path.read_bytes()))
    except OSError as error:
        reason = error.strerror or str(error)
        issue = ConfigIssue("supplemental_bundle_path", f"{path}: cannot read the file: {reason}")
    except ValueError:
        issue = ConfigIssue("supplemental_bundle_path", f"{path}: holds no PEM certificate")
    raise ConfigError([issue])


def _csr_pem(csr_der: bytes, trust_domain: TrustDomain) -> bytes:
    """Blocking: the CSR, checked by SPIRE's rules, as PEM (what IssueCertificate takes)."""
    return validate_ca_csr(csr_der, trust_domain).public_bytes(serialization.Encoding.PEM)


def _parse(pem: str, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise UnavailableError(f"the private CA answered a {what} that is not PEM") from None


def _answer(
    issued_pem: str, authority: Sequence[x509.Certificate], supplemental: Sequence[x509.Certificate]
) -> UpstreamX509CA:
    """Blocking: the new CA followed by the private CA's certificates below the root; the root
    and the supplemental certificates, each once, as the roots."""
    issued = _parse(issued_pem, "certificate")[0]
    roots: list[bytes] = []
    for certificate in (authority[-1], *supplemental):
        der = certificate.public_bytes(_DER)
        if der not in roots:
            roots.append(der)
    return UpstreamX509CA(
        ca_chain=tuple(c.public_bytes(_DER) for c in (issued, *authority[:-1])),
        upstream_roots=tuple(roots),
    )


@dataclass(frozen=True)
class _Configured:
    host: HostServices
    access: AwsAccess
    ca_arn: str
    signing_algorithm: str
    template_arn: str
    supplemental: tuple[x509.Certificate, ...]


class AwsPcaUpstreamAuthority:
    """SPIRE's ``aws_pca`` upstream authority; see the module documentation."""

    def __init__(self) -> None:
        self._configured: _Configured | None = None

    async def configure(self, config: AwsPcaUpstreamConfig, host: HostServices) -> None:
        """Load the supplemental bundle and look the private CA up; ConfigError naming the
        setting and the reason."""
        supplemental: tuple[x509.Certificate, ...] = ()
        if config.supplemental_bundle_path is not None:
            supplemental = await asyncio.to_thread(
                _load_supplemental, config.supplemental_bundle_path
            )
        access = AwsAccess(
            region=config.region,
            endpoint=config.endpoint,
            assume_role_arn=config.assume_role_arn,
            session_name="pyspire-aws-pca",
        )
        described = await self._describe(access, config)
        status = described.get("Status", "")
        if status != "ACTIVE":
            host.logger.warning(
                "the private CA is in an invalid state for issuance",
                certificate_authority_arn=config.certificate_authority_arn,
                status=status,
            )
        ca_configuration = described.get("CertificateAuthorityConfiguration") or {}
        algorithm = config.signing_algorithm or str(ca_configuration.get("SigningAlgorithm", ""))
        if not algorithm:
            raise ConfigError(
                [ConfigIssue("signing_algorithm", "not set, and the private CA names none")]
            )
        self._configured = _Configured(
            host=host,
            access=access,
            ca_arn=config.certificate_authority_arn,
            signing_algorithm=algorithm,
            template_arn=config.ca_signing_template_arn or DEFAULT_CA_SIGNING_TEMPLATE_ARN,
            supplemental=supplemental,
        )

    @staticmethod
    async def _describe(access: AwsAccess, config: AwsPcaUpstreamConfig) -> dict[str, Any]:
        field = "assume_role_arn" if access.assume_role_arn else "certificate_authority_arn"
        try:
            async with private_ca(access) as pca:
                field = "certificate_authority_arn"
                return dict(await pca.describe(config.certificate_authority_arn))
        except AwsCallError as error:
            raise ConfigError([ConfigIssue(field, str(error))]) from None

    async def close(self) -> None:
        self._configured = None

    def _require(self) -> _Configured:
        if self._configured is None:
            raise PluginError("the aws_pca upstream authority is not configured")
        return self._configured

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        """Have the private CA issue the server's CA for ``csr_der``; see the module
        documentation. InvalidArgumentError for a CSR SPIRE refuses, PermissionDeniedError when
        AWS denies access, UnavailableError for any other failure."""
        configured = self._require()
        csr_pem = await asyncio.to_thread(_csr_pem, csr_der, configured.host.trust_domain)
        try:
            async with private_ca(configured.access) as pca:
                ca = await pca.ca_certificate(configured.ca_arn)
                authority = await asyncio.to_thread(_authority, ca)
                now = configured.host.clock.now()
                certificate_arn = await pca.issue(
                    configured.ca_arn,
                    csr_pem,
                    signing_algorithm=configured.signing_algorithm,
                    template_arn=configured.template_arn,
                    not_after=_not_after(authority[0], now, preferred_ttl),
                )
                issued = await pca.wait_for_certificate(
                    configured.ca_arn, certificate_arn, configured.host.clock
                )
        except AwsCallError as error:
            if error.code in ("AccessDeniedException", "AccessDenied"):
                raise PermissionDeniedError(str(error)) from None
            raise
        configured.host.logger.info(
            "server CA issued by the private CA", certificate_arn=certificate_arn
        )
        return await asyncio.to_thread(_answer, issued, authority, configured.supplemental)

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        """A private CA holds no JWT keys: the server keeps its own in the bundle."""
        return []

    def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        """No updates: the roots are what each mint returns."""
        return no_bundle_updates()


def _authority(ca: CaCertificate) -> list[x509.Certificate]:
    """Blocking: the private CA's certificate, then the chain above it up to the root."""
    certificates = _parse(ca.certificate, "CA certificate")[:1]
    if ca.chain.strip():
        certificates.extend(_parse(ca.chain, "CA certificate chain"))
    return certificates


def _not_after(authority: x509.Certificate, now: datetime, preferred_ttl: timedelta) -> datetime:
    """The end of the server's CA: the preferred TTL (1 h when none), never past the private
    CA's end; UnavailableError once the private CA has expired."""
    end = authority.not_valid_after_utc
    if now >= end:
        raise UnavailableError(
            f"the private CA's certificate expired at {end.isoformat()}: it can sign nothing"
        )
    ttl = preferred_ttl if preferred_ttl > timedelta(0) else DEFAULT_CA_TTL
    return min(now + ttl, end)
