"""The ``aws_secretsmanager`` SVID store against moto's server as Secrets Manager: the SDK's
contract, SPIRE's document and calls, the tag rule, metadata and configuration."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pyspire_svidstore_aws_secretsmanager import (
    SecretOptions,
    SecretsManagerConfig,
    SecretsManagerStore,
    encode_secret,
)
from pyspire_svidstore_aws_secretsmanager.plugin import pyspire_svid_stores
from pyspire_svidstore_aws_secretsmanager.secret import FIELD_NAMES
from pyspire_svidstore_aws_secretsmanager.testing import read_secret, read_stored
from structlog.testing import capture_logs

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, InvalidArgumentError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.svid_store import StoredSvid, SvidStore
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.pki import TestAuthority
from pyspire_sdk.testing.readme import assert_readme_documents
from pyspire_sdk.testing.svid_store_contract import (
    FEDERATED_TRUST_DOMAINS,
    TRUST_DOMAIN,
    ReadBack,
    SvidStoreContract,
    make_stored_svid,
)

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    return moto_server


def config(aws: MotoServer, **settings: Any) -> SecretsManagerConfig:
    return load_config(
        SecretsManagerConfig, {"region": aws.region, **settings}, path="aws_secretsmanager"
    )


@pytest_asyncio.fixture
async def store(aws: MotoServer, host_services: HostServices) -> AsyncIterator[SecretsManagerStore]:
    store = SecretsManagerStore()
    await store.configure(config(aws), host_services)
    yield store
    await store.close()


@pytest.fixture(scope="module")
def authority() -> TestAuthority:
    return TestAuthority(TRUST_DOMAIN)


def fresh_name() -> str:
    return f"pyspire/test-{secrets.token_hex(6)}"


async def read(aws: MotoServer, secret_id: str, **client: Any) -> ReadBack | None:
    return await asyncio.to_thread(read_stored, aws.client("secretsmanager", **client), secret_id)


async def describe(aws: MotoServer, secret_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = await asyncio.to_thread(
        aws.client("secretsmanager").describe_secret, SecretId=secret_id
    )
    return answer


class TestSecretsManagerStoreContract(SvidStoreContract):
    @pytest_asyncio.fixture
    async def svid_store(self, store: SecretsManagerStore) -> SvidStore:
        return store

    @pytest.fixture
    def svid_store_name(self) -> str:
        return "aws_secretsmanager"

    @pytest.fixture
    def fresh_metadata(self) -> Callable[[], tuple[str, ...]]:
        return lambda: (f"secretname:{fresh_name()}",)

    @pytest.fixture
    def read_stored(self, aws: MotoServer) -> Callable[[tuple[str, ...]], Any]:
        async def reader(metadata: tuple[str, ...]) -> ReadBack | None:
            return await read(aws, SecretOptions.parse(metadata).secret_id)

        return reader

    @pytest.fixture
    def invalid_metadata(self) -> list[tuple[str, ...]]:
        return [(), ("secretname",), ("name:x",), ("kmskeyid:alias/k",), ("secretname:a b",)]


def test_the_document_is_spires(authority: TestAuthority) -> None:
    federated = [TestAuthority(td) for td in FEDERATED_TRUST_DOMAINS]
    svid = make_stored_svid(("secretname:x",), authority=authority, federated=federated)
    value = encode_secret(svid)
    document = json.loads(value)
    assert list(document) == list(FIELD_NAMES)
    assert FIELD_NAMES == ("spiffeID", "x509SVID", "x509SVIDKey", "bundle", "federatedBundles")
    assert document["spiffeID"] == "spiffe://example.org/workload"
    assert document["x509SVID"].startswith("-----BEGIN CERTIFICATE-----\n")
    assert document["x509SVIDKey"].startswith("-----BEGIN PRIVATE KEY-----\n")
    assert list(document["federatedBundles"]) == [
        "spiffe://federated.example",
        "spiffe://partner.example",
    ]
    # Go's encoding/json: compact, no spaces between tokens.
    assert b'","x509SVID":"' in value and b": " not in value
    assert read_secret(value) == ReadBack.of(svid)


def test_without_federation_the_field_is_left_out(authority: TestAuthority) -> None:
    document = json.loads(encode_secret(make_stored_svid(("secretname:x",), authority=authority)))
    assert list(document) == ["spiffeID", "x509SVID", "x509SVIDKey", "bundle"]


def test_a_key_that_is_not_pkcs8_is_an_invalid_argument(authority: TestAuthority) -> None:
    svid = make_stored_svid(("secretname:x",), authority=authority)
    broken = StoredSvid(
        spiffe_id=svid.spiffe_id,
        cert_chain=svid.cert_chain,
        private_key=b"not a key",
        bundle=svid.bundle,
        expires_at=svid.expires_at,
        metadata=svid.metadata,
    )
    with pytest.raises(InvalidArgumentError, match="private_key is not a PKCS#8 private key"):
        encode_secret(broken)


async def test_a_created_secret_is_binary_tagged_and_encrypted_as_configured(
    aws: MotoServer, host_services: HostServices, authority: TestAuthority
) -> None:
    name = fresh_name()
    store = SecretsManagerStore()
    await store.configure(config(aws, kms_key_id="alias/pyspire-default"), host_services)
    try:
        await store.put_x509_svid(make_stored_svid((f"secretname:{name}",), authority=authority))
        named = fresh_name()
        await store.put_x509_svid(
            make_stored_svid(
                (f"secretname:{named}", "kmskeyid:alias/pyspire-entry"), authority=authority
            )
        )
    finally:
        await store.close()
    description = await describe(aws, name)
    assert {"Key": "spire-svid", "Value": "true"} in description["Tags"]
    assert description["KmsKeyId"] == "alias/pyspire-default"
    assert (await describe(aws, named))["KmsKeyId"] == "alias/pyspire-entry"
    value = await asyncio.to_thread(aws.client("secretsmanager").get_secret_value, SecretId=name)
    assert "SecretBinary" in value and "SecretString" not in value


async def test_a_rotation_is_a_new_version_of_the_same_secret(
    aws: MotoServer, store: SecretsManagerStore, authority: TestAuthority
) -> None:
    metadata = (f"secretname:{fresh_name()}",)
    await store.put_x509_svid(make_stored_svid(metadata, authority=authority))
    arn = (await describe(aws, metadata[0].removeprefix("secretname:")))["ARN"]
    rotated = make_stored_svid(metadata, path="/rotated", authority=authority)
    await store.put_x509_svid(rotated)
    versions = await asyncio.to_thread(
        aws.client("secretsmanager").list_secret_version_ids, SecretId=arn
    )
    assert len(versions["Versions"]) == 2
    assert await read(aws, arn) == ReadBack.of(rotated)


async def test_the_arn_addresses_the_secret_before_the_name(
    aws: MotoServer, store: SecretsManagerStore, authority: TestAuthority
) -> None:
    name = fresh_name()
    await store.put_x509_svid(make_stored_svid((f"secretname:{name}",), authority=authority))
    arn = (await describe(aws, name))["ARN"]
    by_arn = make_stored_svid(
        (f"arn:{arn}", "secretname:ignored-when-arn-given"), authority=authority
    )
    await store.put_x509_svid(by_arn)
    assert await read(aws, name) == ReadBack.of(by_arn)
    await store.delete_x509_svid((f"arn:{arn}",))
    assert await read(aws, name) is None


async def test_an_unknown_arn_cannot_be_created(
    aws: MotoServer, store: SecretsManagerStore, authority: TestAuthority
) -> None:
    arn = f"arn:aws:secretsmanager:{aws.region}:123456789012:secret:pyspire/absent-AbCdEf"
    with pytest.raises(InvalidArgumentError, match="secretname:<name> is required"):
        await store.put_x509_svid(make_stored_svid((f"arn:{arn}",), authority=authority))


@pytest.mark.parametrize("tags", [[], [{"Key": "spire-svid", "Value": "false"}]])
async def test_a_secret_without_spires_tag_is_left_alone(
    aws: MotoServer,
    store: SecretsManagerStore,
    authority: TestAuthority,
    tags: list[dict[str, str]],
) -> None:
    name = fresh_name()
    client = aws.client("secretsmanager")
    await asyncio.to_thread(client.create_secret, Name=name, SecretString="not ours", Tags=tags)
    metadata = (f"secretname:{name}",)
    with pytest.raises(InvalidArgumentError, match="does not contain the 'spire-svid' tag"):
        await store.put_x509_svid(make_stored_svid(metadata, authority=authority))
    with pytest.raises(InvalidArgumentError, match="does not contain the 'spire-svid' tag"):
        await store.delete_x509_svid(metadata)
    value = await asyncio.to_thread(client.get_secret_value, SecretId=name)
    assert value["SecretString"] == "not ours"
    assert "DeletedDate" not in await describe(aws, name)


async def test_a_delete_schedules_the_deletion_and_a_put_restores(
    aws: MotoServer, store: SecretsManagerStore, authority: TestAuthority
) -> None:
    name = fresh_name()
    metadata = (f"secretname:{name}",)
    await store.put_x509_svid(make_stored_svid(metadata, authority=authority))
    arn = (await describe(aws, name))["ARN"]
    await store.delete_x509_svid(metadata)
    assert "DeletedDate" in await describe(aws, name)
    again = make_stored_svid(metadata, path="/again", authority=authority)
    await store.put_x509_svid(again)
    restored = await describe(aws, name)
    assert "DeletedDate" not in restored and restored["ARN"] == arn
    assert await read(aws, name) == ReadBack.of(again)


async def test_the_configured_keys_are_the_ones_used(
    aws: MotoServer, host_services: HostServices, authority: TestAuthority
) -> None:
    other = await asyncio.to_thread(aws.assume_role, "210987654321")
    store = SecretsManagerStore()
    keys = {"access_key_id": other.access_key_id, "secret_access_key": other.secret_access_key}
    await store.configure(config(aws, **keys), host_services)
    name = fresh_name()
    try:
        await store.put_x509_svid(make_stored_svid((f"secretname:{name}",), authority=authority))
    finally:
        await store.close()
    assert await read(aws, name) is None  # not in the default account
    assert await read(aws, name, credentials=other) is not None


async def test_an_unreachable_endpoint_is_unavailable(
    aws: MotoServer,
    store: SecretsManagerStore,
    authority: TestAuthority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(UnavailableError, match="failed to describe secret"):
        await store.put_x509_svid(make_stored_svid(("secretname:x",), authority=authority))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (("secretname",), "does not contain a colon"),
        (("name:web",), "unknown key 'name'"),
        (("secretname:",), "secretname is empty"),
        (("secretname:a", "secretname:b"), "secretname is given twice"),
        (("kmskeyid:k",), "either the secret name or ARN is required"),
        (("secretname:has space",), "a secret name is 1 to 512"),
    ],
)
def test_metadata_errors_name_the_value(metadata: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        SecretOptions.parse(metadata)


def test_metadata_is_spires() -> None:
    options = SecretOptions.parse(["secretname:web", "arn:arn:aws:x", "kmskeyid:alias/k"])
    assert options == SecretOptions(name="web", arn="arn:aws:x", kms_key_id="alias/k")
    assert options.secret_id == "arn:aws:x"
    assert SecretOptions.parse(["secretname:a/b_c+d=e.f@g-h"]).secret_id == "a/b_c+d=e.f@g-h"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({}, "aws_secretsmanager.region"),
        ({"region": ""}, "aws_secretsmanager.region"),
        ({"region": "us-east-1", "access_key_id": "AK"}, "aws_secretsmanager.secret_access_key"),
        ({"region": "us-east-1", "secret_access_key": "SK"}, "aws_secretsmanager.access_key_id"),
        ({"region": "us-east-1", "kms_key": "x"}, "aws_secretsmanager.kms_key"),
    ],
)
def test_bad_settings_name_their_key(settings: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(SecretsManagerConfig, settings, path="aws_secretsmanager")
    assert key in str(raised.value)


async def test_the_secret_access_key_is_never_shown(
    aws: MotoServer, host_services: HostServices
) -> None:
    secret = "s3cr3t-" + secrets.token_hex(8)
    loaded = config(aws, access_key_id="AKIDEXAMPLE", secret_access_key=secret)
    assert secret not in repr(loaded)
    with capture_logs() as events:
        store = SecretsManagerStore()
        await store.configure(loaded, host_services)
        await store.close()
    assert secret not in repr(events)


def test_registration_loads_no_aws_sdk() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_svidstore_aws_secretsmanager.plugin as p\n"
        "[r.factory() for r in p.pyspire_svid_stores()]"
    )
    assert "pyspire_svidstore_aws_secretsmanager" in loaded
    assert not loaded & {"aiobotocore", "botocore", "boto3", "aiohttp"}


def test_the_registration_is_spires_name() -> None:
    [registration] = pyspire_svid_stores()
    assert registration.name == "aws_secretsmanager"
    assert registration.config_type is SecretsManagerConfig


def test_readme_documents_the_settings() -> None:
    assert_readme_documents(README, SecretsManagerConfig)
