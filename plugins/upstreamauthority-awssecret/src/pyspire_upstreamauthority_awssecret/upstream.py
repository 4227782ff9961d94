"""The ``awssecret`` upstream authority, as SPIRE's ``upstreamauthority/awssecret``.

The upstream CA's certificates (the signing CA, then its intermediates), its private key and,
optionally, the roots are PEM strings in three AWS Secrets Manager secrets. They are read once,
when the plugin is configured (as SPIRE reads them), and checked with the rules of
:mod:`pyspire_sdk.upstream_ca`, the same as the ``disk`` upstream authority's: the key matches
the first certificate; without ``bundle_file_arn`` that certificate must be alone and
self-signed, and is the root; with it, the certificates verify against the bundle's roots and
follow every minted CA in its chain. A new upstream CA in the secrets is taken up when the
server starts (or the plugin is configured) again.

JWT keys are not published upstream (``publish_jwt_key`` returns ``[]``; SPIRE answers
Unimplemented) and the roots never change by subscription: the server follows the roots
through the answers to its mints.
"""

from __future__ import annotations

__all__ = ["AwsSecretUpstreamAuthority"]

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta

from pyspire_sdk.aws import AwsAccess
from pyspire_sdk.bundle import JwtAuthority
from pyspire_sdk.errors import PluginError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.upstream_authority import UpstreamBundle, UpstreamX509CA
from pyspire_sdk.upstream_ca import PemSources, UpstreamCa, load_upstream_ca, no_bundle_updates
from pyspire_upstreamauthority_awssecret.config import AwsSecretUpstreamConfig
from pyspire_upstreamauthority_awssecret.secretsmanager import read_secrets


def _access(config: AwsSecretUpstreamConfig) -> AwsAccess:
    return AwsAccess(
        region=config.region,
        access_key_id=config.access_key_id,
        secret_access_key=config.secret_access_key,
        # SPIRE's awssecret alone takes the environment's token for configured keys.
        session_token=config.secret_token or os.environ.get("AWS_SESSION_TOKEN", ""),
        assume_role_arn=config.assume_role_arn,
        session_name="pyspire-awssecret",
    )


def _arns(config: AwsSecretUpstreamConfig) -> dict[str, str]:
    arns = {"key_file_arn": config.key_file_arn, "cert_file_arn": config.cert_file_arn}
    if config.bundle_file_arn:
        arns["bundle_file_arn"] = config.bundle_file_arn
    return arns


def _sources(config: AwsSecretUpstreamConfig) -> PemSources:
    return PemSources(
        key_field="key_file_arn",
        key_source=config.key_file_arn,
        certificates_field="cert_file_arn",
        certificates_source=config.cert_file_arn,
        bundle_field="bundle_file_arn",
        bundle_source=config.bundle_file_arn,
    )


class AwsSecretUpstreamAuthority:
    """SPIRE's ``awssecret`` upstream authority; see the module documentation."""

    def __init__(self) -> None:
        self._host: HostServices | None = None
        self._ca: UpstreamCa | None = None

    async def configure(self, config: AwsSecretUpstreamConfig, host: HostServices) -> None:
        """Read the secrets and check them; ConfigError naming the setting and the reason."""
        pems = await read_secrets(_access(config), _arns(config))
        ca = await asyncio.to_thread(
            load_upstream_ca,
            key_pem=pems["key_file_arn"],
            certificates_pem=pems["cert_file_arn"],
            bundle_pem=pems.get("bundle_file_arn"),
            trust_domain=host.trust_domain,
            now=host.clock.now(),
            sources=_sources(config),
        )
        self._host, self._ca = host, ca
        host.logger.info(
            "upstream CA loaded from AWS Secrets Manager",
            cert_file_arn=config.cert_file_arn,
            upstream_ca=ca.certificate.subject.rfc4514_string(),
            not_after=ca.certificate.not_valid_after_utc.isoformat(),
        )

    async def close(self) -> None:
        self._ca = None

    async def mint_x509_ca(self, csr_der: bytes, preferred_ttl: timedelta) -> UpstreamX509CA:
        """Sign the server's CA CSR with the upstream CA (SPIRE's rules, see
        :meth:`pyspire_sdk.upstream_ca.UpstreamCa.mint`)."""
        if self._host is None or self._ca is None:
            raise PluginError("the awssecret upstream authority is not configured")
        return await asyncio.to_thread(
            self._ca.mint, csr_der, preferred_ttl, self._host.clock.now()
        )

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        """Secrets hold no JWT keys: the server keeps its own in the bundle."""
        return []

    def subscribe_to_bundle_updates(self) -> AsyncIterator[UpstreamBundle]:
        """No updates: the roots are what each mint returns."""
        return no_bundle_updates()
