"""``aws_s3`` against moto's server as S3: the SDK's contract suite, the formats, credentials
and endpoint from the settings, failures and their retry, and the settings' checks."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pyspire_bundlepublisher_aws_s3 import PLUGIN_NAME, AwsS3Config, AwsS3Publisher
from pyspire_bundlepublisher_aws_s3.plugin import pyspire_bundle_publishers

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import TestAuthority
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.bundle_publisher_contract import BundlePublisherContract, ReadPublished
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.readme import assert_readme_documents

TD = TrustDomain("example.org")
README = Path(__file__).resolve().parents[1] / "README.md"
SECRET = "do-not-show-this-secret"


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    return moto_server


@pytest.fixture
def bucket(aws: MotoServer) -> str:
    name = f"bundles-{secrets.token_hex(6)}"
    aws.client("s3").create_bucket(Bucket=name)
    return name


def settings(bucket: str, **more: object) -> dict[str, object]:
    return {
        "region": "us-east-1",
        "bucket": bucket,
        "object_key": "example.org",
        "format": "spiffe",
        **more,
    }


async def configured(host: HostServices, **values: object) -> AwsS3Publisher:
    publisher = AwsS3Publisher()
    await publisher.configure(load_config(AwsS3Config, values, path=PLUGIN_NAME), host)
    return publisher


def fetch(aws: MotoServer, bucket: str, key: str = "example.org") -> dict[str, Any] | None:
    client = aws.client("s3")
    try:
        answer: dict[str, Any] = client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    answer["Content"] = answer["Body"].read()
    return answer


class TestAwsS3Publisher(BundlePublisherContract):
    @pytest_asyncio.fixture
    async def bundle_publisher(
        self, host_services: HostServices, bucket: str
    ) -> AsyncIterator[AwsS3Publisher]:
        publisher = await configured(host_services, **settings(bucket))
        yield publisher
        await publisher.close()

    @pytest.fixture
    def read_published(self, aws: MotoServer, bucket: str) -> ReadPublished:
        async def read() -> bytes | None:
            found = await asyncio.to_thread(fetch, aws, bucket)
            return None if found is None else bytes(found["Content"])

        return read


@pytest.fixture
def bundle() -> Bundle:
    return TestAuthority(TD).bundle(sequence_number=3)


@pytest.mark.asyncio
async def test_pem_is_uploaded_with_its_content_type(
    host_services: HostServices, aws: MotoServer, bucket: str, bundle: Bundle
) -> None:
    publisher = await configured(host_services, **settings(bucket, format="pem"))
    await publisher.publish_bundle(bundle)
    found = await asyncio.to_thread(fetch, aws, bucket)
    assert found is not None
    assert found["Content"] == bundle.to_pem().encode()
    assert found["ContentType"] == "application/x-pem-file"


@pytest.mark.asyncio
async def test_an_unchanged_bundle_is_not_uploaded_again(
    host_services: HostServices, aws: MotoServer, bucket: str, bundle: Bundle
) -> None:
    publisher = await configured(host_services, **settings(bucket))
    await publisher.publish_bundle(bundle)
    await asyncio.to_thread(aws.client("s3").delete_object, Bucket=bucket, Key="example.org")
    await publisher.publish_bundle(bundle)
    assert await asyncio.to_thread(fetch, aws, bucket) is None
    await publisher.publish_bundle(bundle.with_changes())
    found = await asyncio.to_thread(fetch, aws, bucket)
    assert found is not None
    assert Bundle.from_spiffe_json(TD, found["Content"]).sequence_number == 4


@pytest.mark.asyncio
async def test_a_missing_bucket_is_unavailable_and_the_next_attempt_uploads(
    host_services: HostServices, aws: MotoServer, bundle: Bundle
) -> None:
    name = f"later-{secrets.token_hex(6)}"
    publisher = await configured(host_services, **settings(name))
    with pytest.raises(UnavailableError, match=f"s3://{name}/example.org: NoSuchBucket"):
        await publisher.publish_bundle(bundle)
    await asyncio.to_thread(aws.client("s3").create_bucket, Bucket=name)
    await publisher.publish_bundle(bundle)
    found = await asyncio.to_thread(fetch, aws, name)
    assert found is not None
    assert Bundle.from_spiffe_json(TD, found["Content"]) == bundle


@pytest.mark.asyncio
async def test_endpoint_and_credentials_come_from_the_settings(
    host_services: HostServices,
    aws: MotoServer,
    bucket: str,
    bundle: Bundle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    values = settings(
        bucket, endpoint=aws.url, access_key_id="AKIDEXAMPLE", secret_access_key=SECRET
    )
    publisher = await configured(host_services, **values)
    await publisher.publish_bundle(bundle)
    assert await asyncio.to_thread(fetch, aws, bucket) is not None


@pytest.mark.asyncio
async def test_an_unreachable_endpoint_is_unavailable_without_the_secret(
    host_services: HostServices, bucket: str, bundle: Bundle
) -> None:
    values = settings(
        bucket,
        endpoint="http://127.0.0.1:9",
        access_key_id="AKIDEXAMPLE",
        secret_access_key=SECRET,
    )
    publisher = await configured(host_services, **values)
    with pytest.raises(UnavailableError, match=f"s3://{bucket}/example.org") as raised:
        await publisher.publish_bundle(bundle)
    assert SECRET not in str(raised.value)
    assert SECRET not in repr(load_config(AwsS3Config, values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "aws_s3.bucket: "),
        (settings("b", format="der"), "aws_s3.format: expected one of 'spiffe', 'jwks', 'pem'"),
        (settings(" "), "aws_s3.bucket: must not be empty"),
        (settings("b", access_key_id="AKID"), "aws_s3.secret_access_key: configuration missing"),
        (settings("b", secret_access_key=SECRET), "aws_s3.access_key_id: configuration missing"),
        (settings("b", endpoint="minio:9000"), "aws_s3.endpoint: must be an http:// or https://"),
        (settings("b", refresh="1h"), "aws_s3.refresh: "),
    ],
)
def test_bad_settings_are_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(AwsS3Config, values, path=PLUGIN_NAME)
    assert message in str(raised.value)
    assert SECRET not in str(raised.value)


def test_loading_the_plugin_imports_no_aws_sdk() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_bundlepublisher_aws_s3.plugin as p; p.pyspire_bundle_publishers()"
    )
    assert loaded.isdisjoint({"aiobotocore", "botocore", "aiohttp"})


def test_the_hook_registers_a_bundle_publisher() -> None:
    (registration,) = pyspire_bundle_publishers()
    assert registration.name == PLUGIN_NAME
    assert isinstance(registration.factory(), BundlePublisher)


def test_the_readme_documents_the_settings() -> None:
    assert_readme_documents(README, AwsS3Config)
