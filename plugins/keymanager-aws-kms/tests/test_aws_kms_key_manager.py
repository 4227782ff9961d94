"""The ``aws_kms`` key manager against moto's KMS on loopback, unpatched: the contract, aliases
per server, restarts, replacement and disposal of old keys, messages sent whole or as digests,
and refusal of bad signatures. Every signature is checked against the key's public half, here
and by the key manager itself."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspire_keymanager_aws_kms import plugin
from pyspire_keymanager_aws_kms.aliases import alias_name, key_id_from_alias, server_prefix
from pyspire_keymanager_aws_kms.config import AwsKmsKeyManagerConfig
from pyspire_keymanager_aws_kms.kms import KmsClient
from pyspire_keymanager_aws_kms.plugin import AwsKmsKeyManager
from pyspire_keymanager_aws_kms.signing import (
    MAX_RAW_MESSAGE,
    SignRequest,
    digest_request,
    message_request,
)

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, PluginError
from pyspire_sdk.keys import verify_message_signature
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, HostServices
from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyManager, KeyType
from pyspire_sdk.testing.aws import MotoServer
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.host import make_host_services
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.key_manager_contract import KeyManagerContract
from pyspire_sdk.testing.readme import assert_readme_documents

README = Path(__file__).resolve().parent.parent / "README.md"
REGION = "us-east-1"
DIGEST = HashAlgorithm.SHA256.digest(b"tbs certificate")
MESSAGE = b"tbs certificate"


def config(**overrides: Any) -> AwsKmsKeyManagerConfig:
    settings: dict[str, Any] = {"region": REGION, "key_identifier_file": "kms_server_id"}
    settings.update(overrides)
    return load_config(AwsKmsKeyManagerConfig, settings)


async def start(host: HostServices, **overrides: Any) -> AwsKmsKeyManager:
    manager = AwsKmsKeyManager()
    await manager.configure(config(**overrides), host)
    return manager


def key_state(aws: MotoServer, kms_key_id: str, region: str = REGION) -> str:
    metadata = aws.client("kms", region=region).describe_key(KeyId=kms_key_id)["KeyMetadata"]
    return str(metadata["KeyState"])


def aliases(aws: MotoServer, prefix: str, region: str = REGION) -> dict[str, str]:
    answer = aws.client("kms", region=region).list_aliases(Limit=1000)["Aliases"]
    return {a["AliasName"]: a["TargetKeyId"] for a in answer if a["AliasName"].startswith(prefix)}


class TestAwsKmsKeyManager(KeyManagerContract):
    # moto's KMS hashes a DIGEST message again, where AWS signs it as given: every digest
    # signature it returns must be refused. Messages (RAW) it signs as AWS does.
    digests_signed_faithfully = False

    @pytest.fixture
    async def key_manager(
        self, aws: MotoServer, host_services: HostServices
    ) -> AsyncIterator[KeyManager]:
        manager = await start(host_services)
        yield manager
        await manager.close()

    async def restarted_key_manager(self, host_services: HostServices) -> KeyManager:
        return await start(host_services)


# -- the server ID and the aliases ---------------------------------------------------------------


async def test_server_id_is_made_private_and_kept(
    aws: MotoServer, host_services: HostServices
) -> None:
    first = await start(host_services)
    await first.close()
    path = host_services.data_dir / "kms_server_id"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first.server_id
    second = await start(host_services)
    await second.close()
    assert second.server_id == first.server_id


async def test_a_file_without_a_server_id_is_refused(
    aws: MotoServer, host_services: HostServices
) -> None:
    path = host_services.data_dir / "kms_server_id"
    path.write_text("not/an id\n")
    with pytest.raises(PluginError, match="kms_server_id"):
        await start(host_services)


async def test_keys_are_named_by_trust_domain_server_and_key_id(
    aws: MotoServer, host_services: HostServices
) -> None:
    manager = await start(host_services, key_identifier_file=None, key_identifier_value="srv-1")
    try:
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        await manager.generate_key("JWT_Signer.A", KeyType.EC_P256)
    finally:
        await manager.close()
    named = aliases(aws, "alias/SPIRE_SERVER/example_2eorg/srv-1/")
    assert set(named) == {
        "alias/SPIRE_SERVER/example_2eorg/srv-1/x509-CA-A",
        "alias/SPIRE_SERVER/example_2eorg/srv-1/JWT_5fSigner_2eA",
    }
    description = aws.client("kms").describe_key(KeyId=named[min(named)])["KeyMetadata"]
    assert description["Description"] == "SPIRE_SERVER/example.org"


def test_alias_names_round_trip_and_long_key_ids_are_hashed() -> None:
    prefix = server_prefix("example.org", "s")
    for key_id in ("x509-CA-A", "a_b", "sp ace", "~!*", "k" * 100):
        alias = alias_name("example.org", "s", key_id)
        assert key_id_from_alias(alias, prefix) == key_id
        assert all(c.isalnum() or c in "/_-." for c in alias)
    long_alias = alias_name("example.org", "s", "k" * 256)
    assert len(long_alias) <= 256
    assert key_id_from_alias(long_alias, prefix) is None
    assert key_id_from_alias("alias/other", prefix) is None


async def test_a_long_key_id_is_found_again_from_its_tag(
    aws: MotoServer, host_services: HostServices
) -> None:
    manager = await start(host_services)
    created = await manager.generate_key("k" * 256, KeyType.EC_P256)
    await manager.close()
    restarted = await start(host_services)
    try:
        assert await restarted.get_public_keys() == [created]
    finally:
        await restarted.close()


async def test_another_servers_keys_are_not_loaded(
    aws: MotoServer, host_services: HostServices
) -> None:
    one = await start(host_services, key_identifier_file=None, key_identifier_value="one")
    try:
        await one.generate_key("x509-CA-A", KeyType.EC_P256)
    finally:
        await one.close()
    two = await start(host_services, key_identifier_file=None, key_identifier_value="two")
    try:
        assert await two.get_public_keys() == []
    finally:
        await two.close()


# -- replacing keys --------------------------------------------------------------------------


async def test_replaced_key_is_scheduled_for_deletion_after_its_signatures(
    aws: MotoServer, host_services: HostServices
) -> None:
    manager = await start(host_services)
    try:
        old = await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        old_kms_key = aliases(aws, server_prefix("example.org", manager.server_id))
        (old_target,) = old_kms_key.values()
        signature, new = await asyncio.gather(
            manager.sign_message("x509-CA-A", MESSAGE, HashAlgorithm.SHA256),
            manager.generate_key("x509-CA-A", KeyType.EC_P256),
        )
        assert verify_message_signature(
            old, signature, MESSAGE, HashAlgorithm.SHA256
        ) or verify_message_signature(new, signature, MESSAGE, HashAlgorithm.SHA256)
        (new_target,) = aliases(aws, server_prefix("example.org", manager.server_id)).values()
        assert new_target != old_target
        assert key_state(aws, old_target) == "PendingDeletion"
        assert key_state(aws, new_target) == "Enabled"
    finally:
        await manager.close()


async def test_moto_digest_signatures_are_refused_as_not_verifying(
    aws: MotoServer, host_services: HostServices
) -> None:
    """Plain moto hashes a DIGEST message again: the key manager must not hand that out."""
    manager = await start(host_services)
    try:
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        with pytest.raises(PluginError, match="does not verify"):
            await manager.sign_digest("x509-CA-A", DIGEST, HashAlgorithm.SHA256)
    finally:
        await manager.close()


# -- disposal of stale aliases and keys ------------------------------------------------------


async def test_stale_aliases_and_keys_are_disposed_of(aws: MotoServer, tmp_path: Path) -> None:
    region = "eu-west-3"  # a region of its own, so the account's key list is short
    clock = FakeClock(datetime.now(UTC))
    host = make_host_services(tmp_path, clock=clock)
    gone = await start(host, region=region, key_identifier_file=None, key_identifier_value="gone")
    try:
        await gone.generate_key("x509-CA-A", KeyType.EC_P256)
    finally:
        await gone.close()
    (gone_key,) = aliases(aws, "alias/SPIRE_SERVER/example_2eorg/gone/", region).values()
    kms = aws.client("kms", region=region)
    orphan = kms.create_key(
        KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Description="SPIRE_SERVER/example.org"
    )["KeyMetadata"]["KeyId"]
    foreign = kms.create_key(
        KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Description="someone else's"
    )["KeyMetadata"]["KeyId"]

    live = await start(host, region=region, key_identifier_file=None, key_identifier_value="live")
    try:
        await live.generate_key("x509-CA-A", KeyType.EC_P256)
        assert aliases(aws, "alias/SPIRE_SERVER/example_2eorg/gone/", region)
        await clock.advance(timedelta(days=15))
        await live.generate_key("x509-CA-B", KeyType.EC_P256)
    finally:
        await live.close()
    assert aliases(aws, "alias/SPIRE_SERVER/example_2eorg/gone/", region) == {}
    assert key_state(aws, gone_key, region) == "PendingDeletion"
    assert key_state(aws, orphan, region) == "PendingDeletion"
    assert key_state(aws, foreign, region) == "Enabled"
    assert len(aliases(aws, "alias/SPIRE_SERVER/example_2eorg/live/", region)) == 2


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"key_identifier_file": "id"}, "region"),
        ({"region": REGION}, "key_identifier_file"),
        (
            {"region": REGION, "key_identifier_file": "id", "key_identifier_value": "x"},
            "key_identifier_value",
        ),
        ({"region": REGION, "key_identifier_value": "a/b"}, "key_identifier_value"),
        ({"region": REGION, "key_identifier_value": "a", "access_key_id": "A"}, "secret"),
        ({"region": REGION, "key_identifier_value": "a", "secret_access_key": "S"}, "access"),
        ({"region": REGION, "key_identifier_value": "a", "key_prefix": "x"}, "key_prefix"),
    ],
)
def test_bad_configuration_names_the_key(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(AwsKmsKeyManagerConfig, settings)


def test_the_secret_never_shows() -> None:
    loaded = config(access_key_id="AKIDEXAMPLE", secret_access_key="wJalrXUtnFEMI-secret")
    assert "wJalrXUtnFEMI-secret" not in repr(loaded)
    with pytest.raises(ConfigError) as caught:
        load_config(
            AwsKmsKeyManagerConfig,
            {"region": "", "key_identifier_value": "a", "secret_access_key": "wJalr-secret"},
        )
    assert "wJalr-secret" not in str(caught.value)


async def test_key_policy_file_is_given_to_new_keys(
    aws: MotoServer, host_services: HostServices
) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "pyspire-test",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    (host_services.data_dir / "policy.json").write_text(json.dumps(policy))
    manager = await start(host_services, key_policy_file="policy.json")
    try:
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        (target,) = aliases(aws, server_prefix("example.org", manager.server_id)).values()
    finally:
        await manager.close()
    stored = aws.client("kms").get_key_policy(KeyId=target, PolicyName="default")["Policy"]
    assert json.loads(stored)["Statement"][0]["Sid"] == "pyspire-test"


async def test_a_key_policy_file_that_is_not_json_is_refused(
    aws: MotoServer, host_services: HostServices
) -> None:
    (host_services.data_dir / "policy.json").write_text("{not json")
    manager = AwsKmsKeyManager()
    try:
        with pytest.raises(PluginError, match=r"policy\.json"):
            await manager.configure(config(key_policy_file="policy.json"), host_services)
    finally:
        await manager.close()


# -- packaging -------------------------------------------------------------------------------


def test_registered_as_aws_kms() -> None:
    (registration,) = plugin.pyspire_key_managers()
    assert registration.name == "aws_kms"
    assert registration.config_type is AwsKmsKeyManagerConfig
    assert isinstance(registration.factory(), KeyManager)
    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    assert any(point.name == "aws_kms" for point in entry_points)


def test_registering_does_not_import_aiobotocore() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_keymanager_aws_kms.plugin as p; p.pyspire_key_managers()"
    )
    assert "aiobotocore" not in loaded
    assert "botocore" not in loaded


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(README, AwsKmsKeyManagerConfig)


async def test_the_secret_access_key_is_never_logged(
    aws: MotoServer, host_services: HostServices, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    manager = await start(host_services, access_key_id="AKIDEXAMPLE", secret_access_key=secret)
    try:
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        await manager.sign_message("x509-CA-A", MESSAGE, HashAlgorithm.SHA256)
    finally:
        await manager.close()
    captured = capsys.readouterr()
    assert "kms key made" in captured.out + captured.err
    assert secret not in captured.out + captured.err


async def test_a_replaced_key_lives_until_its_last_signature_is_done(
    aws: MotoServer, host_services: HostServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    signing = asyncio.Event()
    release = asyncio.Event()
    sign = KmsClient.sign

    async def held(self: KmsClient, key_id: str, request: SignRequest) -> bytes:
        signing.set()
        await release.wait()
        return await sign(self, key_id, request)

    manager = await start(host_services)
    try:
        old = await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        (old_target,) = aliases(aws, server_prefix("example.org", manager.server_id)).values()
        monkeypatch.setattr(KmsClient, "sign", held)
        under_way = asyncio.ensure_future(
            manager.sign_message("x509-CA-A", MESSAGE, HashAlgorithm.SHA256)
        )
        await asyncio.wait_for(signing.wait(), 10)
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        assert key_state(aws, old_target) == "Enabled"
        release.set()
        signature = await under_way
        assert verify_message_signature(old, signature, MESSAGE, HashAlgorithm.SHA256)
        assert key_state(aws, old_target) == "PendingDeletion"
    finally:
        release.set()
        await manager.close()


# -- messages: whole (RAW) or as a digest -----------------------------------------------------


def test_the_servers_messages_are_sent_whole() -> None:
    for key_type in KeyType:
        request = message_request(key_type, b"t" * MAX_RAW_MESSAGE, key_type.hash_algorithm)
        assert (request.message_type, request.message) == ("RAW", b"t" * MAX_RAW_MESSAGE)
    rsa = message_request(KeyType.RSA_2048, b"tbs", HashAlgorithm.SHA512)
    assert (rsa.message_type, rsa.algorithm) == ("RAW", "RSASSA_PKCS1_V1_5_SHA_512")


@pytest.mark.parametrize(
    ("key_type", "message", "hash_algorithm"),
    [
        (KeyType.EC_P256, b"t" * (MAX_RAW_MESSAGE + 1), HashAlgorithm.SHA256),
        (KeyType.RSA_2048, b"t" * (MAX_RAW_MESSAGE + 1), HashAlgorithm.SHA256),
        (KeyType.EC_P256, b"tbs", HashAlgorithm.SHA384),
        (KeyType.EC_P384, b"", HashAlgorithm.SHA384),
    ],
    ids=["long-ec", "long-rsa", "ec-other-hash", "empty"],
)
def test_other_messages_are_sent_as_their_digest(
    key_type: KeyType, message: bytes, hash_algorithm: HashAlgorithm
) -> None:
    request = message_request(key_type, message, hash_algorithm)
    expected = digest_request(
        key_type, hash_algorithm.digest(message), hash_algorithm, rsa_pss=False
    )
    assert request == expected
    assert request.message_type == "DIGEST"


async def test_a_message_too_long_for_kms_goes_as_a_digest_and_is_checked(
    aws: MotoServer, host_services: HostServices
) -> None:
    """Over 4 KiB the message goes as a DIGEST, which moto signs wrongly (it hashes it again,
    where AWS does not): the key manager refuses that signature rather than handing it out."""
    manager = await start(host_services)
    try:
        public = await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        whole = await manager.sign_message(
            "x509-CA-A", b"t" * MAX_RAW_MESSAGE, HashAlgorithm.SHA256
        )
        assert verify_message_signature(public, whole, b"t" * MAX_RAW_MESSAGE, HashAlgorithm.SHA256)
        with pytest.raises(PluginError, match="message type DIGEST"):
            await manager.sign_message(
                "x509-CA-A", b"t" * (MAX_RAW_MESSAGE + 1), HashAlgorithm.SHA256
            )
    finally:
        await manager.close()


async def test_a_wrong_signature_from_kms_is_refused(
    aws: MotoServer, host_services: HostServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signature by KMS over other bytes than asked (a genuine KMS signature, only not of
    this message) never leaves the key manager."""
    sign = KmsClient.sign

    async def other_message(self: KmsClient, key_id: str, request: SignRequest) -> bytes:
        return await sign(self, key_id, replace(request, message=request.message + b"!"))

    manager = await start(host_services)
    try:
        await manager.generate_key("x509-CA-A", KeyType.RSA_2048)
        monkeypatch.setattr(KmsClient, "sign", other_message)
        with pytest.raises(PluginError, match="does not verify"):
            await manager.sign_message("x509-CA-A", MESSAGE, HashAlgorithm.SHA256)
    finally:
        await manager.close()
