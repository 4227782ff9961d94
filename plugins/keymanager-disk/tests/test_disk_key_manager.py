"""The ``disk`` key manager: the contract, file permissions, refusal of bad files, atomic
replacement and restarts, all on real files."""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire_keymanager_disk import plugin
from pyspire_keymanager_disk.config import DiskKeyManagerConfig
from pyspire_keymanager_disk.keys_file import (
    encode_keys,
    ensure_private_directory,
    write_keys_file,
)
from pyspire_keymanager_disk.plugin import DiskKeyManager

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, PluginError
from pyspire_sdk.keys import KeyRecord, private_key_to_pkcs8, verify_digest_signature
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, HostServices
from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyManager, KeyType
from pyspire_sdk.testing.key_manager_contract import KeyManagerContract
from pyspire_sdk.testing.readme import assert_readme_documents

README = Path(__file__).resolve().parent.parent / "README.md"
DIGEST = HashAlgorithm.SHA256.digest(b"tbs")


async def start(host: HostServices, keys_path: Path | None = None) -> DiskKeyManager:
    manager = DiskKeyManager()
    await manager.configure(DiskKeyManagerConfig(keys_path=keys_path), host)
    return manager


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ec_entry(key_id: str = "x509-CA-A", key_type: str = "ec-p256") -> dict[str, str]:
    der = private_key_to_pkcs8(ec.generate_private_key(ec.SECP256R1()))
    return {"id": key_id, "type": key_type, "pkcs8": base64.b64encode(der).decode()}


def write_private(path: Path, content: bytes | str) -> Path:
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    path.chmod(0o600)
    return path


class TestDiskKeyManager(KeyManagerContract):
    @pytest.fixture
    async def key_manager(self, host_services: HostServices) -> AsyncIterator[KeyManager]:
        manager = await start(host_services)
        yield manager
        await manager.close()

    async def restarted_key_manager(self, host_services: HostServices) -> KeyManager:
        return await start(host_services)


# -- where the file goes and how it is protected -------------------------------------------------


async def test_default_path_is_keys_json_in_the_data_dir(host_services: HostServices) -> None:
    manager = await start(host_services)
    assert manager.keys_path == host_services.data_dir.absolute() / "keys.json"
    assert not manager.keys_path.exists(), "no file is written before the first key"
    await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    assert mode_of(manager.keys_path) == 0o600
    await manager.close()


async def test_missing_directories_are_created_private(
    host_services: HostServices, tmp_path: Path
) -> None:
    keys_path = tmp_path / "state" / "server" / "keys.json"
    manager = await start(host_services, keys_path)
    assert mode_of(tmp_path / "state") == 0o700
    assert mode_of(tmp_path / "state" / "server") == 0o700
    await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    assert mode_of(keys_path) == 0o600
    await manager.close()


async def test_existing_directory_mode_is_left_alone(
    host_services: HostServices, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    manager = await start(host_services, shared / "keys.json")
    assert mode_of(shared) == 0o755
    await manager.close()


async def test_a_file_in_place_of_the_directory_is_refused(
    host_services: HostServices, tmp_path: Path
) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(PluginError, match="not-a-dir must be a directory"):
        await start(host_services, tmp_path / "not-a-dir" / "keys.json")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700, 0o777])
async def test_loose_file_mode_is_refused(
    host_services: HostServices, tmp_path: Path, mode: int
) -> None:
    keys_path = write_private(tmp_path / "keys.json", json.dumps({"version": 1, "keys": []}))
    keys_path.chmod(mode)
    with pytest.raises(PluginError) as raised:
        await start(host_services, keys_path)
    message = str(raised.value)
    assert str(keys_path) in message
    assert f"{mode:04o}" in message
    assert f"chmod 600 {keys_path}" in message
    assert not message.endswith(".")


@pytest.mark.parametrize("mode", [0o600, 0o400])
async def test_owner_only_modes_are_accepted(
    host_services: HostServices, tmp_path: Path, mode: int
) -> None:
    keys_path = write_private(
        tmp_path / "keys.json", json.dumps({"version": 1, "keys": [ec_entry()]})
    )
    keys_path.chmod(mode)
    manager = await start(host_services, keys_path)
    assert [key.key_id for key in await manager.get_public_keys()] == ["x509-CA-A"]
    await manager.generate_key("x509-CA-B", KeyType.EC_P256)
    assert mode_of(keys_path) == 0o600
    await manager.close()


async def test_a_directory_as_keys_path_is_refused(
    host_services: HostServices, tmp_path: Path
) -> None:
    (tmp_path / "keys.json").mkdir()
    with pytest.raises(PluginError, match="is not a regular file"):
        await start(host_services, tmp_path / "keys.json")


# -- refusing files that are not valid keys files ------------------------------------------------


def _rsa_labelled_as_ec() -> str:
    return json.dumps({"version": 1, "keys": [ec_entry(key_type="rsa-2048")]})


BAD_CONTENT = [
    ("binary", b"\x00\xff\xfe garbage", "not UTF-8 text"),
    ("empty", b"", "not valid JSON"),
    ("text", "not json at all", "not valid JSON: Expecting value at line 1 column 1"),
    ("array", "[]", "expected a JSON object with 'version' and 'keys', found an array"),
    ("no-version", '{"keys": []}', "version: expected 1, found null"),
    ("other-version", '{"version": 2, "keys": []}', "version: expected 1, found 2"),
    ("bool-version", '{"version": true, "keys": []}', "version: expected 1, found true"),
    ("no-keys", '{"version": 1}', "keys: expected an array, found null"),
    ("keys-object", '{"version": 1, "keys": {}}', "keys: expected an array, found an object"),
    ("unknown-top", '{"version": 1, "keys": [], "x": 1}', "unknown field 'x'"),
    ("entry-not-object", '{"version": 1, "keys": [1]}', "keys[0]: expected an object"),
    (
        "entry-missing-pkcs8",
        '{"version": 1, "keys": [{"id": "a", "type": "ec-p256"}]}',
        "keys[0].pkcs8: expected a string, found null",
    ),
    (
        "entry-extra-field",
        json.dumps({"version": 1, "keys": [{**ec_entry(), "pem": "x"}]}),
        "keys[0]: unknown field 'pem'",
    ),
    (
        "bad-id",
        json.dumps({"version": 1, "keys": [ec_entry(key_id="a/b")]}),
        "keys[0]: key_id contains '/'",
    ),
    (
        "bad-type",
        json.dumps({"version": 1, "keys": [ec_entry(key_type="dsa")]}),
        "keys[0]: key_type must be one of",
    ),
    (
        "bad-base64",
        json.dumps({"version": 1, "keys": [{**ec_entry(), "pkcs8": "!!not base64!!"}]}),
        "keys[0].pkcs8: not valid base64",
    ),
    (
        "not-a-key",
        json.dumps(
            {"version": 1, "keys": [{**ec_entry(), "pkcs8": base64.b64encode(b"xyz").decode()}]}
        ),
        "keys[0].pkcs8: private key is not a valid unencrypted PKCS#8 DER key",
    ),
    (
        "type-mismatch",
        _rsa_labelled_as_ec(),
        "keys[0]: type says 'rsa-2048' but the key is 'ec-p256'",
    ),
    (
        "duplicate-id",
        json.dumps({"version": 1, "keys": [ec_entry(), ec_entry()]}),
        "keys[1].id: key_id 'x509-CA-A' appears more than once",
    ),
]


@pytest.mark.parametrize(
    ("content", "problem"),
    [(content, problem) for _, content, problem in BAD_CONTENT],
    ids=[name for name, _, _ in BAD_CONTENT],
)
async def test_invalid_content_is_refused(
    host_services: HostServices, tmp_path: Path, content: bytes | str, problem: str
) -> None:
    keys_path = write_private(tmp_path / "keys.json", content)
    with pytest.raises(PluginError) as raised:
        await start(host_services, keys_path)
    message = str(raised.value)
    assert message.startswith(f"keys file {keys_path}: ")
    assert problem in message
    assert keys_path.read_bytes() == (content.encode() if isinstance(content, str) else content)


async def test_refusal_never_quotes_key_material(
    host_services: HostServices, tmp_path: Path
) -> None:
    entry = ec_entry()
    der = bytearray(base64.b64decode(entry["pkcs8"]))
    der[-3] ^= 0xFF
    entry["pkcs8"] = base64.b64encode(bytes(der)).decode()
    keys_path = write_private(tmp_path / "keys.json", json.dumps({"version": 1, "keys": [entry]}))
    with pytest.raises(PluginError) as raised:
        await start(host_services, keys_path)
    assert entry["pkcs8"][:16] not in str(raised.value)
    assert "keys[0].pkcs8" in str(raised.value)


# -- writing -------------------------------------------------------------------------------------


async def test_file_holds_exactly_the_current_keys(host_services: HostServices) -> None:
    manager = await start(host_services)
    await manager.generate_key("x509-CA-B", KeyType.EC_P384)
    old = await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    new = await manager.generate_key("x509-CA-A", KeyType.RSA_2048)
    document = json.loads(manager.keys_path.read_text())
    assert document["version"] == 1
    assert [(e["id"], e["type"]) for e in document["keys"]] == [
        ("x509-CA-A", "rsa-2048"),
        ("x509-CA-B", "ec-p384"),
    ]
    assert new.der != old.der
    await manager.close()


async def test_replacing_leaves_no_temporary_files(host_services: HostServices) -> None:
    manager = await start(host_services)
    for _ in range(3):
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    await asyncio.gather(
        *(manager.generate_key(f"workload-{index}", KeyType.EC_P256) for index in range(8))
    )
    assert sorted(path.name for path in host_services.data_dir.iterdir()) == ["keys.json"]
    await manager.close()


async def test_failed_write_keeps_old_key_and_cleans_up(host_services: HostServices) -> None:
    manager = await start(host_services)
    old = await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.keys_path.unlink()
    manager.keys_path.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(PluginError, match=f"cannot write keys file {manager.keys_path}"):
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    assert await manager.get_public_keys() == [old]
    signature = await manager.sign_digest("x509-CA-A", DIGEST, HashAlgorithm.SHA256)
    assert verify_digest_signature(old, signature, DIGEST, HashAlgorithm.SHA256)
    assert sorted(path.name for path in host_services.data_dir.iterdir()) == ["keys.json"]
    await manager.close()


def test_write_replaces_atomically_with_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    target.write_text("old")
    target.chmod(0o644)
    original_inode = target.stat().st_ino
    record = KeyRecord.of("a", ec.generate_private_key(ec.SECP256R1()))
    assert write_keys_file(target, encode_keys([record])) is True
    assert target.stat().st_ino != original_inode, "the file is renamed over, not rewritten"
    assert mode_of(target) == 0o600
    assert json.loads(target.read_text())["keys"][0]["id"] == "a"
    assert [path.name for path in tmp_path.iterdir()] == ["keys.json"]


# -- restarts ------------------------------------------------------------------------------------


async def test_restart_signs_with_the_same_keys(host_services: HostServices) -> None:
    first = await start(host_services)
    public = await first.generate_key("x509-CA-A", KeyType.EC_P256)
    await first.close()

    second = await start(host_services)
    assert await second.get_public_key("x509-CA-A") == public
    signature = await second.sign_digest("x509-CA-A", DIGEST, HashAlgorithm.SHA256)
    assert verify_digest_signature(public, signature, DIGEST, HashAlgorithm.SHA256)
    await second.close()


async def test_restart_after_concurrent_generation_keeps_every_key(
    host_services: HostServices,
) -> None:
    first = await start(host_services)
    made = await asyncio.gather(
        *(first.generate_key(f"workload-{index}", KeyType.EC_P256) for index in range(10))
    )
    await first.close()
    second = await start(host_services)
    assert await second.get_public_keys() == sorted(made, key=lambda key: key.key_id)
    await second.close()


async def test_logs_never_carry_key_material(host_services: HostServices) -> None:
    with structlog.testing.capture_logs() as logs:
        manager = DiskKeyManager()
        await manager.configure(
            DiskKeyManagerConfig(),
            HostServices(
                trust_domain=host_services.trust_domain,
                clock=host_services.clock,
                logger=structlog.get_logger(),
                metrics=host_services.metrics,
                data_dir=host_services.data_dir,
            ),
        )
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
        await manager.close()
    assert logs, "the key manager logs what it does"
    secret = json.loads(manager.keys_path.read_text())["keys"][0]["pkcs8"]
    assert all(secret[:24] not in repr(event) for event in logs)
    assert any(event.get("key_id") == "x509-CA-A" for event in logs)


# -- registration and documentation ---------------------------------------------------------------


def test_registration() -> None:
    [registration] = plugin.pyspire_key_managers()
    assert registration.name == "disk"
    assert registration.config_type is DiskKeyManagerConfig
    assert isinstance(registration.factory(), KeyManager)


def test_config_loading(tmp_path: Path) -> None:
    table = "server.plugins.key_manager.disk"
    assert load_config(DiskKeyManagerConfig, {}, path=table).keys_path is None
    loaded = load_config(DiskKeyManagerConfig, {"keys_path": "./keys.json"}, path=table)
    assert loaded.resolve_keys_path(tmp_path) == Path("keys.json").absolute()
    with pytest.raises(ConfigError, match=f"{table}.keys_path: expected a file path"):
        load_config(DiskKeyManagerConfig, {"keys_path": 7}, path=table)
    with pytest.raises(ConfigError, match=f"{table}.directory: unknown key"):
        load_config(DiskKeyManagerConfig, {"directory": "/tmp"}, path=table)


def test_readme_documents_every_setting() -> None:
    assert_readme_documents(README, DiskKeyManagerConfig)


def test_entry_point_is_installed() -> None:
    found = {
        entry_point.name: entry_point.value
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_point.dist is not None
        and entry_point.dist.metadata["Name"] == "pyspire-keymanager-disk"
    }
    assert found == {"disk": "pyspire_keymanager_disk.plugin"}


def test_process_umask_does_not_loosen_the_file(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        target = tmp_path / "nested" / "keys.json"
        ensure_private_directory(target.parent)
        write_keys_file(target, b"{}")
    finally:
        os.umask(previous)
    assert mode_of(target.parent) == 0o700
    assert mode_of(target) == 0o600
