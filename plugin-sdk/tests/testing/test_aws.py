"""moto's server on loopback: AWS SDKs reach it through the environment it gives, and
assumed-role credentials act in the role's account."""

from __future__ import annotations

import pytest

from pyspire_sdk.testing.aws import DEFAULT_ACCOUNT_ID, MotoServer


def test_the_environment_points_sdks_at_the_server(moto_server: MotoServer) -> None:
    environment = moto_server.environment()
    assert environment["AWS_ENDPOINT_URL"] == moto_server.url
    assert moto_server.url.startswith("http://127.0.0.1:")
    identity = moto_server.client("sts").get_caller_identity()
    assert identity["Account"] == DEFAULT_ACCOUNT_ID


def test_assumed_role_credentials_act_in_the_role_account(moto_server: MotoServer) -> None:
    credentials = moto_server.assume_role("210987654321")
    assert credentials.session_token
    assert credentials.session_token not in repr(credentials)
    remote = moto_server.client("ec2", region="eu-west-1", credentials=credentials)
    group = remote.create_security_group(GroupName="only-there", Description="d")["GroupId"]
    local = moto_server.client("ec2", region="eu-west-1")
    names = [g["GroupName"] for g in local.describe_security_groups()["SecurityGroups"]]
    assert "only-there" not in names
    found = remote.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert found[0]["OwnerId"] == "210987654321"


def test_reset_forgets_everything() -> None:
    with MotoServer() as server:
        iam = server.client("iam")
        iam.create_role(RoleName="Gone", AssumeRolePolicyDocument="{}")
        server.reset()
        with pytest.raises(iam.exceptions.NoSuchEntityException):
            iam.get_role(RoleName="Gone")
