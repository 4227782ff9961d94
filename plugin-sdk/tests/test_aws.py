"""``pyspire_sdk.aws`` against moto's server: SPIRE's credential rules, an assumed role acting
in its own account, failures as AwsCallError with AWS's code, and no AWS SDK imported until a
client is made."""

from __future__ import annotations

import pytest

from pyspire_sdk.aws import AwsAccess, AwsCallError, aws_call, aws_client
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.imports import top_level_modules_imported_by

OTHER_ACCOUNT = "111122223333"


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_server


def test_static_keys_need_both_halves_and_take_the_environment_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "from-env")
    assert AwsAccess(access_key_id="AKID").static_credentials() == {}
    assert AwsAccess(secret_access_key="s").static_credentials() == {}
    both = AwsAccess(access_key_id="AKID", secret_access_key="s")
    assert both.static_credentials()["aws_session_token"] == "from-env"
    given = AwsAccess(access_key_id="AKID", secret_access_key="s", session_token="given")
    assert given.static_credentials()["aws_session_token"] == "given"
    assert "given" not in repr(given)


async def test_an_assumed_role_acts_in_its_account(aws: MotoServer) -> None:
    access = AwsAccess(
        region=aws.region, assume_role_arn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/reader"
    )
    async with aws_client("sts", access) as sts:
        identity = await aws_call("get caller identity", sts.get_caller_identity())
    assert identity["Account"] == OTHER_ACCOUNT
    async with aws_client("sts", AwsAccess(region=aws.region)) as sts:
        identity = await aws_call("get caller identity", sts.get_caller_identity())
    assert identity["Account"] != OTHER_ACCOUNT


async def test_failures_carry_the_code_and_what_was_done(aws: MotoServer) -> None:
    async with aws_client("secretsmanager", AwsAccess(region=aws.region)) as client:
        with pytest.raises(AwsCallError, match="failed to read it: ResourceNotFound") as raised:
            await aws_call("read it", client.get_secret_value(SecretId="absent"))
    assert raised.value.code == "ResourceNotFoundException"


async def test_no_region_anywhere_is_named(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(AwsCallError) as raised:
        async with aws_client("secretsmanager", AwsAccess()):
            pass
    assert raised.value.code == "NoRegionError"


async def test_an_endpoint_setting_wins_over_the_environment(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    access = AwsAccess(region=aws.region, endpoint=aws.url)
    async with aws_client("sts", access) as sts:
        await aws_call("get caller identity", sts.get_caller_identity())
    async with aws_client("sts", AwsAccess(region=aws.region)) as sts:
        with pytest.raises(AwsCallError, match="failed to get caller identity"):
            await aws_call("get caller identity", sts.get_caller_identity())


def test_importing_the_module_imports_no_aws_sdk() -> None:
    loaded = top_level_modules_imported_by("import pyspire_sdk.aws")
    assert loaded.isdisjoint({"aiobotocore", "botocore", "boto3"})
