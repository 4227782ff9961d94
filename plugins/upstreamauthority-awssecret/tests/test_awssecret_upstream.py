"""The ``awssecret`` upstream authority against moto's server as Secrets Manager and STS: the
SDK's contract suite in both of SPIRE's layouts, then what is particular to secrets: reading
them (with static keys, an assumed role in another account), refusals naming the setting, the
chain SPIRE builds, secrets kept out of logs, and aiobotocore imported only when used."""

from __future__ import annotations

import importlib.metadata
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyspire_upstreamauthority_awssecret import AwsSecretUpstreamAuthority, AwsSecretUpstreamConfig
from pyspire_upstreamauthority_awssecret.plugin import pyspire_upstream_authorities
from pyspire_upstreamauthority_awssecret.upstream import _access
from structlog.testing import capture_logs

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, HostServices, PluginRegistration
from pyspire_sdk.plugins.upstream_authority import UpstreamAuthority
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.aws import AwsCredentials, MotoServer
from pyspire_sdk.testing.imports import top_level_modules_imported_by
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
OTHER_ACCOUNT = "111122223333"

Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _ca(name: str, issuer: Issuer | None, now: datetime, ttl: timedelta) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(PEM).decode() for c in certificates)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_server


@dataclass
class CaSecrets:
    """An upstream PKI stored in Secrets Manager: ``signer`` mints; with a bundle, ``root``
    signs ``intermediate``, which signs ``signer``; without, ``signer`` is the root."""

    signer: Issuer
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]
    arns: dict[str, str]

    @classmethod
    def make(
        cls,
        aws: MotoServer,
        now: datetime,
        *,
        with_bundle: bool,
        credentials: AwsCredentials | None = None,
    ) -> CaSecrets:
        if with_bundle:
            root = _ca("upstream root", None, now, timedelta(days=365))
            intermediate = _ca("upstream intermediate", root, now, timedelta(days=180))
            signer = _ca("upstream signer", intermediate, now, timedelta(days=30))
            chain, roots = (signer[0], intermediate[0]), (root[0],)
        else:
            signer = _ca("upstream root", None, now, timedelta(days=30))
            chain, roots = (signer[0],), (signer[0],)
        values = {"cert_file_arn": _pem(*chain), "key_file_arn": _key_pem(signer[1])}
        if with_bundle:
            values["bundle_file_arn"] = _pem(*roots)
        client = aws.client("secretsmanager", credentials=credentials)
        arns = {name: put_secret(client, value) for name, value in values.items()}
        return cls(signer, chain, roots, arns)

    def settings(self, **more: Any) -> dict[str, Any]:
        return {**self.arns, **more}

    def config(self, **more: Any) -> AwsSecretUpstreamConfig:
        return load_config(AwsSecretUpstreamConfig, self.settings(**more))


def put_secret(client: Any, value: str | bytes) -> str:
    name = f"upstream-{secrets.token_hex(6)}"
    if isinstance(value, bytes):
        return str(client.create_secret(Name=name, SecretBinary=value)["ARN"])
    return str(client.create_secret(Name=name, SecretString=value)["ARN"])


async def configured(
    config: AwsSecretUpstreamConfig, host_services: HostServices
) -> AwsSecretUpstreamAuthority:
    upstream = AwsSecretUpstreamAuthority()
    await upstream.configure(config, host_services)
    return upstream


REGISTRATION = pyspire_upstream_authorities()[0]


class _AwsSecretContract(UpstreamAuthorityContract):
    with_bundle = False

    @pytest.fixture
    def ca_secrets(self, aws: MotoServer, fake_clock: FakeClock) -> CaSecrets:
        return CaSecrets.make(aws, fake_clock.now(), with_bundle=self.with_bundle)

    @pytest_asyncio.fixture
    async def upstream_authority(
        self, ca_secrets: CaSecrets, host_services: HostServices
    ) -> AsyncIterator[UpstreamAuthority]:
        upstream = await configured(ca_secrets.config(), host_services)
        yield upstream
        await upstream.close()

    @pytest.fixture
    def upstream_registration(self) -> PluginRegistration[Any, UpstreamAuthority]:
        return REGISTRATION

    @pytest.fixture
    def upstream_misconfigurations(
        self, ca_secrets: CaSecrets, aws: MotoServer, fake_clock: FakeClock
    ) -> Sequence[Misconfiguration]:
        good = ca_secrets.settings()
        other = CaSecrets.make(aws, fake_clock.now(), with_bundle=True)
        absent = good["key_file_arn"] + "-absent"
        return [
            Misconfiguration({"key_file_arn": good["key_file_arn"]}, "cert_file_arn"),
            Misconfiguration({**good, "cert_file_arn": ""}, "cert_file_arn"),
            Misconfiguration({**good, "key_file_arn": absent}, "key_file_arn"),
            Misconfiguration({**good, "cert_file_arn": absent}, "cert_file_arn"),
            Misconfiguration({**good, "bundle_file_arn": absent}, "bundle_file_arn"),
            Misconfiguration({**good, "key_file_arn": other.arns["key_file_arn"]}, "cert_file_arn"),
            Misconfiguration(
                {**good, "bundle_file_arn": other.arns["bundle_file_arn"]}, "bundle_file_arn"
            ),
            Misconfiguration({**good, "access_key_id": "AKIDEXAMPLE"}, "secret_access_key"),
            Misconfiguration({**good, "secret_access_key": "x"}, "access_key_id"),
            Misconfiguration({**good, "cert_arn": good["cert_file_arn"]}, "cert_arn"),
        ]


class TestSelfSignedUpstream(_AwsSecretContract):
    with_bundle = False


class TestUpstreamWithIntermediatesAndRoots(_AwsSecretContract):
    with_bundle = True


# -- the chain SPIRE builds ------------------------------------------------------------------


async def test_chain_carries_the_cert_secret_and_the_bundle_holds_the_roots(
    aws: MotoServer, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pki = CaSecrets.make(aws, fake_clock.now(), with_bundle=True)
    upstream = await configured(pki.config(), host_services)
    key, csr = make_ca_csr([TD_ID])
    minted = await upstream.mint_x509_ca(csr, timedelta(hours=1))

    assert minted.ca_chain[1:] == tuple(c.public_bytes(DER) for c in pki.chain)
    assert minted.upstream_roots == tuple(c.public_bytes(DER) for c in pki.roots)
    path = verify_minted_chain(minted, key, fake_clock.now())
    assert path[2:] == [*pki.chain, *pki.roots]


async def test_a_self_signed_upstream_is_the_root_and_not_in_the_chain(
    aws: MotoServer, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pki = CaSecrets.make(aws, fake_clock.now(), with_bundle=False)
    upstream = await configured(pki.config(), host_services)
    minted = await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], timedelta(hours=1))

    assert len(minted.ca_chain) == 1
    assert minted.upstream_roots == (pki.signer[0].public_bytes(DER),)


async def test_the_secrets_are_read_once_at_configure(
    aws: MotoServer, fake_clock: FakeClock, host_services: HostServices
) -> None:
    """As SPIRE: a secret changed later is used after the next configure, not the next mint."""
    pki = CaSecrets.make(aws, fake_clock.now(), with_bundle=False)
    upstream = await configured(pki.config(), host_services)
    client = aws.client("secretsmanager")
    client.put_secret_value(SecretId=pki.arns["cert_file_arn"], SecretString="torn")
    minted = await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], timedelta(hours=1))
    assert minted.upstream_roots == (pki.signer[0].public_bytes(DER),)
    with pytest.raises(ConfigError, match=r"cert_file_arn: .*holds no PEM certificate"):
        await configured(pki.config(), host_services)


# -- reaching the secrets --------------------------------------------------------------------


async def test_an_assumed_role_reads_secrets_of_its_account(
    aws: MotoServer, fake_clock: FakeClock, host_services: HostServices
) -> None:
    """moto keeps one store per account: only the role's credentials find these secrets."""
    elsewhere = aws.assume_role(OTHER_ACCOUNT)
    pki = CaSecrets.make(aws, fake_clock.now(), with_bundle=True, credentials=elsewhere)
    role = f"arn:aws:iam::{OTHER_ACCOUNT}:role/spire-upstream"

    with pytest.raises(ConfigError, match=r"key_file_arn: unable to read .*ResourceNotFound"):
        await configured(pki.config(), host_services)
    upstream = await configured(pki.config(assume_role_arn=role), host_services)
    minted = await upstream.mint_x509_ca(make_ca_csr([TD_ID])[1], timedelta(hours=1))
    assert minted.upstream_roots == (pki.roots[0].public_bytes(DER),)


async def test_static_keys_are_used_and_never_logged(
    aws: MotoServer, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pki = CaSecrets.make(aws, fake_clock.now(), with_bundle=False)
    secret_key = "wJalrXUtnFEMI-static-secret"
    token = "FwoGZXIvYXdzE-session-token"
    config = pki.config(
        region=aws.region,
        access_key_id="AKIASTATICKEY",
        secret_access_key=secret_key,
        secret_token=token,
    )
    with capture_logs() as logs:
        await configured(config, host_services)
    assert any(entry["event"] == "upstream CA loaded from AWS Secrets Manager" for entry in logs)
    assert secret_key not in repr(logs)
    assert token not in repr(logs)
    assert secret_key not in repr(config)
    assert token not in repr(config)


def test_configured_keys_take_the_environment_token_unless_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPIRE's awssecret reads AWS_SESSION_TOKEN when `secret_token` is empty."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "from-env")
    keys = {"access_key_id": "AKID", "secret_access_key": "s"}
    base = AwsSecretUpstreamConfig(cert_file_arn="c", key_file_arn="k", **keys)
    assert _access(base).static_credentials()["aws_session_token"] == "from-env"
    given = AwsSecretUpstreamConfig(cert_file_arn="c", key_file_arn="k", secret_token="t", **keys)
    assert _access(given).static_credentials()["aws_session_token"] == "t"


async def test_a_binary_secret_is_refused_naming_the_setting(
    aws: MotoServer, fake_clock: FakeClock, host_services: HostServices
) -> None:
    pki = CaSecrets.make(aws, fake_clock.now(), with_bundle=False)
    binary = put_secret(aws.client("secretsmanager"), b"\x00\x01")
    with pytest.raises(ConfigError, match=r"key_file_arn: unable to read .*no SecretString"):
        await configured(pki.config(key_file_arn=binary), host_services)


async def test_no_region_anywhere_is_refused_naming_region(
    aws: MotoServer,
    fake_clock: FakeClock,
    host_services: HostServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pki = CaSecrets.make(aws, fake_clock.now(), with_bundle=False)
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ConfigError, match="region: no region"):
        await configured(pki.config(), host_services)


async def test_an_unreachable_endpoint_is_refused_naming_the_setting(
    aws: MotoServer,
    fake_clock: FakeClock,
    host_services: HostServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pki = CaSecrets.make(aws, fake_clock.now(), with_bundle=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="key_file_arn: unable to read"):
        await configured(pki.config(), host_services)


# -- packaging -------------------------------------------------------------------------------


def test_loading_the_plugin_imports_no_aws_sdk() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_upstreamauthority_awssecret.plugin as p; p.pyspire_upstream_authorities()"
    )
    assert loaded.isdisjoint({"aiobotocore", "botocore", "boto3"})


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(README, AwsSecretUpstreamConfig)


def test_entry_point_is_installed() -> None:
    found = {
        entry_point.name: entry_point.value
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_point.dist is not None
        and entry_point.dist.metadata["Name"] == "pyspire-upstreamauthority-awssecret"
    }
    assert found == {"awssecret": "pyspire_upstreamauthority_awssecret.plugin"}
    assert REGISTRATION.name == "awssecret"
