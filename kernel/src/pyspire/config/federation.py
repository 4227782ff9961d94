"""The ``federation`` table of the server configuration: SPIRE's ``federation`` block.

``bundle_endpoint`` makes this server serve its trust bundle to other trust domains, over the
profile it names: ``https_spiffe`` (the server's own X509-SVID, the default as in SPIRE) or
``https_web`` (a certificate and key read from files and read again when they change; there is
no ACME, which needs a reachable public endpoint). In TOML::

    [server.federation.bundle_endpoint]
    address = "0.0.0.0"
    port = 8443
    refresh_hint = "5m"
    [server.federation.bundle_endpoint.profile.https_web.serving_cert_file]
    cert_file_path = "/etc/pyspire/endpoint.crt"
    key_file_path = "/etc/pyspire/endpoint.key"

``federates_with`` names the trust domains whose bundles this server fetches, each from its
bundle endpoint (SPIRE's ``federates_with "<td>" {}`` blocks)::

    [server.federation.federates_with."domain.test"]
    bundle_endpoint_url = "https://domain.test:8443"
    [server.federation.federates_with."domain.test".bundle_endpoint_profile.https_spiffe]
    endpoint_spiffe_id = "spiffe://domain.test/spire/server"
"""

from __future__ import annotations

__all__ = [
    "MIN_REFRESH_HINT",
    "BundleEndpointConfig",
    "BundleEndpointProfile",
    "FederatesWithConfig",
    "FederatesWithProfile",
    "FederationConfig",
    "HttpsSpiffeProfile",
    "HttpsWebProfile",
    "ServingCertFile",
]

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pyspire.config.common import check_positive
from pyspire_sdk.config import check_port, setting
from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError
from pyspire_sdk.model import (
    FederationProfile,
    FederationRelationship,
    check_bundle_endpoint_url,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

MIN_REFRESH_HINT = timedelta(minutes=1)
"""A shorter refresh hint draws a warning: SPIRE's clients never refresh faster than this."""


@dataclass(frozen=True, kw_only=True)
class ServingCertFile:
    """The certificate chain and key the ``https_web`` endpoint serves, from PEM files."""

    cert_file_path: Path = setting(
        description="PEM file of the serving certificate, followed by its intermediates."
    )
    key_file_path: Path = setting(description="PEM file of the serving certificate's key.")
    file_sync_interval: timedelta = setting(
        default=timedelta(minutes=1),
        description="How often the files are checked for a change (a changed pair is reloaded).",
    )

    def validate(self) -> Iterator[ConfigIssue]:
        yield from check_positive("file_sync_interval", self.file_sync_interval)


@dataclass(frozen=True, kw_only=True)
class HttpsWebProfile:
    """The ``https_web`` profile: a Web PKI certificate, here always read from files."""

    serving_cert_file: ServingCertFile = setting(
        description="Where the serving certificate and key are read from."
    )


@dataclass(frozen=True, kw_only=True)
class HttpsSpiffeProfile:
    """The ``https_spiffe`` profile: the endpoint presents the server's own X509-SVID."""


@dataclass(frozen=True, kw_only=True)
class BundleEndpointProfile:
    """The one profile the endpoint serves with (SPIRE's ``profile "<name>" {}`` block)."""

    https_spiffe: HttpsSpiffeProfile | None = setting(
        default=None, description="Serve with the server's own X509-SVID."
    )
    https_web: HttpsWebProfile | None = setting(
        default=None, description="Serve with a Web PKI certificate read from files."
    )

    def validate(self) -> Iterator[ConfigIssue]:
        if (self.https_spiffe is None) == (self.https_web is None):
            yield ConfigIssue("", "set exactly one of https_spiffe and https_web")


@dataclass(frozen=True, kw_only=True)
class BundleEndpointConfig:
    """Where and how this server serves its bundle to federated trust domains."""

    address: str = setting(
        default="0.0.0.0",  # noqa: S104 - SPIRE's default: other trust domains must reach it
        description="IP address or host name the bundle endpoint listens on.",
    )
    port: int = setting(
        default=443, description="TCP port of the bundle endpoint (0 picks a free port)."
    )
    refresh_hint: timedelta = setting(
        default=timedelta(minutes=5),
        description="How often federated servers are told to fetch the bundle again.",
    )
    profile: BundleEndpointProfile | None = setting(
        default=None, description="The TLS profile served; unset: https_spiffe."
    )

    @property
    def serving_cert_file(self) -> ServingCertFile | None:
        """The files of the ``https_web`` profile; None when the profile is ``https_spiffe``."""
        if self.profile is None or self.profile.https_web is None:
            return None
        return self.profile.https_web.serving_cert_file

    def validate(self) -> Iterator[ConfigIssue]:
        if not self.address.strip():
            yield ConfigIssue("address", "must not be empty")
        yield from check_port("port", self.port, allow_zero=True)
        yield from check_positive("refresh_hint", self.refresh_hint)
        if self.refresh_hint % timedelta(seconds=1):
            yield ConfigIssue("refresh_hint", "must be a whole number of seconds")


@dataclass(frozen=True, kw_only=True)
class HttpsWebRelationship:
    """A foreign endpoint authenticated by the Web PKI (the system's trust store)."""


@dataclass(frozen=True, kw_only=True)
class HttpsSpiffeRelationship:
    """A foreign endpoint authenticated by its X509-SVID, against the trust domain's last
    known bundle (bootstrapped with ``bundle set``)."""

    endpoint_spiffe_id: SpiffeId = setting(
        description="The SPIFFE ID the endpoint's X509-SVID must carry."
    )


@dataclass(frozen=True, kw_only=True)
class FederatesWithProfile:
    """The one profile of a foreign endpoint (SPIRE's ``bundle_endpoint_profile`` block)."""

    https_web: HttpsWebRelationship | None = setting(
        default=None, description="The endpoint serves a Web PKI certificate."
    )
    https_spiffe: HttpsSpiffeRelationship | None = setting(
        default=None, description="The endpoint serves an X509-SVID."
    )

    def validate(self) -> Iterator[ConfigIssue]:
        if (self.https_spiffe is None) == (self.https_web is None):
            yield ConfigIssue("", "set exactly one of https_spiffe and https_web")


@dataclass(frozen=True, kw_only=True)
class FederatesWithConfig:
    """Where a foreign trust domain's bundle is fetched and how its endpoint is trusted."""

    bundle_endpoint_url: str = setting(description="The https URL of the bundle endpoint.")
    bundle_endpoint_profile: FederatesWithProfile = setting(
        description="How the endpoint authenticates itself: https_web or https_spiffe."
    )

    def validate(self) -> Iterator[ConfigIssue]:
        yield from check_bundle_endpoint_url("bundle_endpoint_url", self.bundle_endpoint_url)

    def relationship(self, trust_domain: TrustDomain) -> FederationRelationship:
        """The relationship this block declares with ``trust_domain``."""
        spiffe = self.bundle_endpoint_profile.https_spiffe
        return FederationRelationship(
            trust_domain=trust_domain,
            bundle_endpoint_url=self.bundle_endpoint_url,
            profile=FederationProfile.HTTPS_WEB
            if spiffe is None
            else FederationProfile.HTTPS_SPIFFE,
            endpoint_spiffe_id=None if spiffe is None else spiffe.endpoint_spiffe_id,
        )


@dataclass(frozen=True, kw_only=True)
class FederationConfig:
    """SPIRE's ``federation`` block."""

    bundle_endpoint: BundleEndpointConfig | None = setting(
        default=None, description="Serve this server's bundle to other trust domains."
    )
    federates_with: dict[str, FederatesWithConfig] = setting(
        default_factory=dict,
        description="Trust domains whose bundles are fetched from their bundle endpoints.",
    )

    def relationships(self) -> tuple[FederationRelationship, ...]:
        """The relationships ``federates_with`` declares (valid once loaded)."""
        return tuple(
            block.relationship(TrustDomain(name)) for name, block in self.federates_with.items()
        )

    def validate(self) -> Iterator[ConfigIssue]:
        for name in self.federates_with:
            try:
                TrustDomain(name)
            except InvalidArgumentError as error:
                yield ConfigIssue(f'federates_with."{name}"', f"not a trust domain name: {error}")

    def warnings(self) -> list[ConfigIssue]:
        """Advice that does not stop the server: a refresh hint shorter than a minute."""
        endpoint = self.bundle_endpoint
        if endpoint is not None and endpoint.refresh_hint < MIN_REFRESH_HINT:
            return [
                ConfigIssue(
                    "bundle_endpoint.refresh_hint",
                    "shorter than 1m: federated servers refresh at most once a minute",
                )
            ]
        return []
