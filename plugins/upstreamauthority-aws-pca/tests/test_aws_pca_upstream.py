"""The ``aws_pca`` upstream authority against a loopback AWS Private CA that signs for real
(moto's server cannot issue CA certificates, see the README) and moto's server as STS: the
SDK's contract suite with a private CA that is a root and one under an intermediate, then what
is particular to ACM PCA: the chain and roots, the request it makes, waiting for issuance, the
TTL cut at the CA's end, an inactive CA, an assumed role, the supplemental bundle."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire_upstreamauthority_aws_pca import AwsPcaUpstreamAuthority, AwsPcaUpstreamConfig
from pyspire_upstreamauthority_aws_pca.config import DEFAULT_CA_SIGNING_TEMPLATE_ARN
from pyspire_upstreamauthority_aws_pca.pca import WAIT_LIMIT
from pyspire_upstreamauthority_aws_pca.plugin import pyspire_upstream_authorities
from pyspire_upstreamauthority_aws_pca.testing import PrivateCaEndpoint
from structlog.testing import capture_logs

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, PermissionDeniedError, UnavailableError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, HostServices, PluginRegistration
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority, UpstreamX509CA
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.loopback import serve_loopback
from pyspire_sdk.testing.readme import assert_readme_documents
from pyspire_sdk.testing.upstream_authority_contract import (
    Misconfiguration,
    UpstreamAuthorityContract,
    make_ca_csr,
    verify_minted_chain,
)

README = Path(__file__).resolve().parent.parent / "README.md"
TD_ID = "spiffe://example.org"
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
REGISTRATION = pyspire_upstream_authorities()[0]


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    return moto_server


class Pca:
    """A served private CA and the settings that point the plugin at it."""

    def __init__(self, endpoint: PrivateCaEndpoint, url: str) -> None:
        self.endpoint = endpoint
        self.url = url

    def settings(self, **more: Any) -> dict[str, Any]:
        return {
            "region": "us-east-1",
            "certificate_authority_arn": self.endpoint.arn,
            "endpoint": self.url,
            **more,
        }

    def config(self, **more: Any) -> AwsPcaUpstreamConfig:
        return load_config(AwsPcaUpstreamConfig, self.settings(**more))

    def actions(self) -> list[str]:
        return [call.action for call in self.endpoint.calls]


@pytest_asyncio.fixture
async def serve(aws: MotoServer) -> AsyncIterator[Any]:
    """Serve a given private CA for the rest of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(endpoint: PrivateCaEndpoint) -> Pca:
            server = await stack.enter_async_context(serve_loopback(endpoint.routes()))
            return Pca(endpoint, server.url)

        yield start


async def configured(config: AwsPcaUpstreamConfig, host: HostServices) -> AwsPcaUpstreamAuthority:
    upstream = AwsPcaUpstreamAuthority()
    await upstream.configure(config, host)
    return upstream


async def mint(upstream: AwsPcaUpstreamAuthority, ttl: timedelta) -> UpstreamX509CA:
    return await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], ttl)


class _PcaContract(UpstreamAuthorityContract):
    depth = 1

    @pytest_asyncio.fixture
    async def pca(self, serve: Any, fake_clock: FakeClock) -> Pca:
        pca: Pca = await serve(PrivateCaEndpoint(fake_clock, depth=self.depth))
        return pca

    @pytest_asyncio.fixture
    async def upstream_authority(
        self, pca: Pca, host_services: HostServices
    ) -> AsyncIterator[UpstreamAuthority]:
        upstream = await configured(pca.config(), host_services)
        yield upstream
        await upstream.close()

    @pytest.fixture
    def upstream_registration(self) -> PluginRegistration[Any, UpstreamAuthority]:
        return REGISTRATION

    @pytest.fixture
    def upstream_misconfigurations(self, pca: Pca, tmp_path: Path) -> Sequence[Misconfiguration]:
        good = pca.settings()
        not_pem = tmp_path / "not.pem"
        not_pem.write_text("not a certificate")
        return [
            Misconfiguration({**good, "region": ""}, "region"),
            Misconfiguration({k: v for k, v in good.items() if k != "region"}, "region"),
            Misconfiguration(
                {**good, "certificate_authority_arn": ""}, "certificate_authority_arn"
            ),
            Misconfiguration(
                {**good, "certificate_authority_arn": pca.endpoint.arn + "0"},
                "certificate_authority_arn",
            ),
            Misconfiguration({**good, "endpoint": "ftp://example.org"}, "endpoint"),
            Misconfiguration(
                {**good, "supplemental_bundle_path": str(tmp_path / "absent.pem")},
                "supplemental_bundle_path",
            ),
            Misconfiguration(
                {**good, "supplemental_bundle_path": str(not_pem)}, "supplemental_bundle_path"
            ),
            Misconfiguration({**good, "ca_arn": pca.endpoint.arn}, "ca_arn"),
        ]


class TestPrivateCaIsTheRoot(_PcaContract):
    depth = 0


class TestPrivateCaUnderAnIntermediate(_PcaContract):
    depth = 2


# -- the chain, the roots and the request ----------------------------------------------------


async def test_chain_holds_the_private_ca_and_its_intermediates_and_the_bundle_its_root(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, depth=2))
    upstream = await configured(pca.config(), host_services)
    key, csr = make_ca_csr([TD_ID])
    minted = await upstream.mint_x509_ca(csr, timedelta(hours=1))

    authority = [certificate for certificate, _ in pca.endpoint.authority]
    assert minted.ca_chain[1:] == tuple(c.public_bytes(DER) for c in authority[:-1])
    assert minted.upstream_roots == (pca.endpoint.root.public_bytes(DER),)
    path = verify_minted_chain(minted, key, fake_clock.now())
    assert path[2:] == authority
    ca = x509.load_der_x509_certificate(minted.ca_certificate)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


async def test_the_request_names_the_template_the_algorithm_and_an_absolute_end(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock))
    upstream = await configured(pca.config(), host_services)
    await mint(upstream, timedelta(hours=2))

    assert pca.actions() == [
        "DescribeCertificateAuthority",
        "GetCertificateAuthorityCertificate",
        "IssueCertificate",
        "GetCertificate",
    ]
    issued = pca.endpoint.calls[2].input
    assert issued["TemplateArn"] == DEFAULT_CA_SIGNING_TEMPLATE_ARN
    assert issued["SigningAlgorithm"] == "SHA256WITHECDSA"
    end = fake_clock.now() + timedelta(hours=2)
    assert issued["Validity"] == {"Type": "ABSOLUTE", "Value": int(end.timestamp())}


async def test_a_configured_algorithm_and_template_are_used(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock))
    template = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen1/V1"
    config = pca.config(signing_algorithm="SHA384WITHECDSA", ca_signing_template_arn=template)
    upstream = await configured(config, host_services)
    minted = await mint(upstream, timedelta(hours=1))

    issued = pca.endpoint.calls[2].input
    assert (issued["SigningAlgorithm"], issued["TemplateArn"]) == ("SHA384WITHECDSA", template)
    ca = x509.load_der_x509_certificate(minted.ca_certificate)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1


async def test_the_ttl_stops_at_the_private_ca_end(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, ttl=timedelta(hours=3)))
    upstream = await configured(pca.config(), host_services)
    minted = await mint(upstream, timedelta(hours=24))
    ca = x509.load_der_x509_certificate(minted.ca_certificate)
    assert ca.not_valid_after_utc == pca.endpoint.certificate.not_valid_after_utc


async def test_an_expired_private_ca_signs_nothing(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, ttl=timedelta(hours=3)))
    upstream = await configured(pca.config(), host_services)
    await fake_clock.advance(timedelta(hours=4))
    with pytest.raises(UnavailableError, match="expired"):
        await mint(upstream, timedelta(hours=1))
    assert "IssueCertificate" not in pca.actions()


# -- waiting for issuance --------------------------------------------------------------------


async def test_issuance_in_progress_is_waited_for_on_the_clock(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, pending_polls=2))
    upstream = await configured(pca.config(), host_services)
    minting = asyncio.create_task(mint(upstream, timedelta(hours=1)))
    while not minting.done():
        await asyncio.sleep(0.01)
        if fake_clock.sleepers:
            await fake_clock.advance(10)
    minted = minting.result()
    assert pca.actions().count("GetCertificate") == 3
    assert minted.ca_chain


async def test_an_issuance_that_never_ends_fails_after_the_limit(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, pending_polls=10_000))
    upstream = await configured(pca.config(), host_services)
    start = fake_clock.now()
    minting = asyncio.create_task(mint(upstream, timedelta(hours=1)))
    while not minting.done():
        await asyncio.sleep(0.01)
        if fake_clock.sleepers:
            await fake_clock.advance(10)
    with pytest.raises(UnavailableError, match="was not issued within 300s"):
        minting.result()
    assert fake_clock.now() - start <= WAIT_LIMIT


# -- the private CA's state, credentials, the supplemental bundle ----------------------------


async def test_an_inactive_private_ca_is_a_warning_then_refuses_to_issue(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, status="DISABLED"))
    with capture_logs() as logs:
        upstream = await configured(pca.config(), host_services)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warnings and warnings[0]["status"] == "DISABLED"
    with pytest.raises(UnavailableError, match="InvalidStateException"):
        await mint(upstream, timedelta(hours=1))


async def test_a_denied_issuance_is_a_permission_error(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, denied=frozenset({"IssueCertificate"})))
    upstream = await configured(pca.config(), host_services)
    with pytest.raises(PermissionDeniedError, match="AccessDeniedException"):
        await mint(upstream, timedelta(hours=1))


async def test_a_private_ca_naming_no_algorithm_needs_signing_algorithm(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, signing_algorithm=""))
    with pytest.raises(ConfigError, match="signing_algorithm: not set"):
        await configured(pca.config(), host_services)
    await configured(pca.config(signing_algorithm="SHA256WITHECDSA"), host_services)


async def test_an_assumed_role_signs_the_private_ca_calls(
    serve: Any, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock))
    role = "arn:aws:iam::111122223333:role/spire-upstream"
    upstream = await configured(pca.config(assume_role_arn=role), host_services)
    await mint(upstream, timedelta(hours=1))
    for call in pca.endpoint.calls:
        assert "Credential=ASIA" in call.authorization, call.authorization
        assert call.security_token


async def test_the_supplemental_bundle_joins_the_root_each_once(
    serve: Any, fake_clock: FakeClock, host_services: HostServices, tmp_path: Path
) -> None:
    pca: Pca = await serve(PrivateCaEndpoint(fake_clock, depth=1))
    other = PrivateCaEndpoint(fake_clock, depth=0)
    bundle = tmp_path / "supplemental.pem"
    bundle.write_bytes(other.root.public_bytes(PEM) + pca.endpoint.root.public_bytes(PEM))
    upstream = await configured(pca.config(supplemental_bundle_path=str(bundle)), host_services)
    minted = await mint(upstream, timedelta(hours=1))
    assert minted.upstream_roots == (
        pca.endpoint.root.public_bytes(DER),
        other.root.public_bytes(DER),
    )


async def test_an_unreachable_private_ca_is_refused_at_start(
    fake_clock: FakeClock, host_services: HostServices, aws: MotoServer
) -> None:
    config = load_config(
        AwsPcaUpstreamConfig,
        {
            "region": "us-east-1",
            "certificate_authority_arn": (
                "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/x"
            ),
            "endpoint": "http://127.0.0.1:9",
        },
    )
    with pytest.raises(ConfigError, match="certificate_authority_arn: failed to describe"):
        await configured(config, host_services)


# -- packaging -------------------------------------------------------------------------------


def test_loading_the_plugin_imports_no_aws_sdk() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_upstreamauthority_aws_pca.plugin as p; p.pyspire_upstream_authorities()"
    )
    assert loaded.isdisjoint({"aiobotocore", "botocore", "boto3", "aiohttp"})


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(README, AwsPcaUpstreamConfig)


def test_entry_point_is_installed() -> None:
    found = {
        entry_point.name: entry_point.value
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_point.dist is not None
        and entry_point.dist.metadata["Name"] == "pyspire-upstreamauthority-aws-pca"
    }
    assert found == {"aws_pca": "pyspire_upstreamauthority_aws_pca.plugin"}
    assert REGISTRATION.name == "aws_pca"
