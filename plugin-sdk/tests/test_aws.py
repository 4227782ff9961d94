"""``pyspire_sdk.aws`` against moto's server: SPIRE's credential rules, an assumed role acting
in its own account, kept clients made again before the role's credentials expire, failures as
AwsCallError with AWS's code or as the SDK error a plugin maps it to, one request per call,
and no AWS SDK imported until a client is made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from pyspire_sdk.aws import (
    REFUSALS,
    AwsAccess,
    AwsCallError,
    AwsClients,
    aws_call,
    aws_client,
    key_pair_issues,
)
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.loopback import serve_loopback

OTHER_ACCOUNT = "111122223333"


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_server


def test_static_keys_need_both_halves_and_take_only_the_given_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Configured keys are not mixed with a token meant for other credentials."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "from-env")
    assert AwsAccess(access_key_id="AKID").static_credentials() == {}
    assert AwsAccess(secret_access_key="s").static_credentials() == {}
    both = AwsAccess(access_key_id="AKID", secret_access_key="s")
    assert "aws_session_token" not in both.static_credentials()
    given = AwsAccess(access_key_id="AKID", secret_access_key="s", session_token="given")
    assert given.static_credentials()["aws_session_token"] == "given"
    assert "given" not in repr(given)


def test_a_key_pair_is_both_halves_or_neither() -> None:
    assert list(key_pair_issues("", "")) == []
    assert list(key_pair_issues("AKID", "s")) == []
    (alone,) = key_pair_issues("AKID", "")
    assert alone.path == "secret_access_key"
    assert "missing secret access key" in alone.message
    (alone,) = key_pair_issues("", "s")
    assert alone.path == "access_key_id"


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


async def test_kept_clients_are_shared_and_made_again_before_the_role_expires(
    aws: MotoServer,
) -> None:
    """moto's assumed-role credentials last an hour from the wall clock; the clients serve
    until five minutes before that, by the injected clock, and share one assumption."""
    clock = FakeClock(datetime.now(UTC))
    clients = AwsClients(clock)
    access = AwsAccess(
        region=aws.region, assume_role_arn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/reader"
    )
    try:
        sts = await clients.client("sts", access)
        identity = await aws_call("get caller identity", sts.get_caller_identity())
        assert identity["Account"] == OTHER_ACCOUNT
        secrets = await clients.client("secretsmanager", access)
        await clock.advance(timedelta(minutes=50))
        assert await clients.client("sts", access) is sts
        assert await clients.client("secretsmanager", access) is secrets
        await clock.advance(timedelta(minutes=6))
        renewed = await clients.client("sts", access)
        assert renewed is not sts
        identity = await aws_call("get caller identity", renewed.get_caller_identity())
        assert identity["Account"] == OTHER_ACCOUNT
    finally:
        await clients.close()


async def test_kept_clients_without_a_role_are_kept_until_closed(aws: MotoServer) -> None:
    clock = FakeClock(datetime.now(UTC))
    clients = AwsClients(clock)
    access = AwsAccess(region=aws.region)
    first = await clients.client("sts", access)
    await clock.advance(timedelta(days=30))
    assert await clients.client("sts", access) is first
    await clients.close()
    again = await clients.client("sts", access)
    try:
        assert again is not first
        await aws_call("get caller identity", again.get_caller_identity())
    finally:
        await clients.close()


def _aws_error(status: int, code: str) -> web.Response:
    return web.Response(
        status=status,
        content_type="text/xml",
        text='<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
        f"<Type>Sender</Type><Code>{code}</Code><Message>said no</Message></Error>"
        "<RequestId>1</RequestId></ErrorResponse>",
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AccessDenied", PermissionDeniedError),
        ("ExpiredTokenException", PermissionDeniedError),
        ("InvalidAccessKeyId", PermissionDeniedError),
        ("ValidationException", InvalidArgumentError),
        ("Throttling", AwsCallError),
    ],
)
async def test_mapped_codes_become_their_sdk_errors(
    aws: MotoServer, code: str, expected: type[Exception]
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return _aws_error(400, code)

    async with serve_loopback([("POST", "/", refuse)]) as sts:
        access = AwsAccess(region=aws.region, endpoint=sts.url)
        async with aws_client("sts", access) as client:
            with pytest.raises(expected, match=f"failed to ask: {code}: said no") as raised:
                await aws_call("ask", client.get_caller_identity(), REFUSALS)
    assert isinstance(raised.value, AwsCallError) == (expected is AwsCallError)


async def test_a_call_is_one_request_botocore_does_not_retry(aws: MotoServer) -> None:
    """A server error botocore would retry is one request: the caller's backoff retries."""

    async def fail(request: web.Request) -> web.Response:
        return _aws_error(500, "InternalFailure")

    async with serve_loopback([("POST", "/", fail)]) as sts:
        access = AwsAccess(region=aws.region, endpoint=sts.url)
        async with aws_client("sts", access) as client:
            with pytest.raises(AwsCallError) as raised:
                await aws_call("ask", client.get_caller_identity())
    assert raised.value.code == "InternalFailure"
    assert len(sts.requests) == 1
