"""The ``file`` bundle publisher on real files: the SDK's contract suite, the formats, the
mode, the start-time checks and the retry of a failed write."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pyspire_bundlepublisher_file import PLUGIN_NAME, FileConfig, FilePublisher
from pyspire_bundlepublisher_file.plugin import pyspire_bundle_publishers

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import TestAuthority, jwt_authority
from pyspire_sdk.testing.bundle_publisher_contract import BundlePublisherContract, ReadPublished
from pyspire_sdk.testing.readme import assert_readme_documents

TD = TrustDomain("example.org")
README = Path(__file__).resolve().parents[1] / "README.md"


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


async def configured(host: HostServices, **settings: object) -> FilePublisher:
    config = load_config(FileConfig, settings, path=PLUGIN_NAME)
    publisher = FilePublisher()
    await publisher.configure(config, host)
    return publisher


@pytest.fixture
def bundle() -> Bundle:
    authority = TestAuthority(TD)
    return authority.bundle(jwt_authorities=[jwt_authority(authority.key, "k1")], sequence_number=4)


class TestFilePublisher(BundlePublisherContract):
    @pytest_asyncio.fixture
    async def bundle_publisher(
        self, host_services: HostServices, tmp_path: Path
    ) -> AsyncIterator[FilePublisher]:
        publisher = await configured(host_services, path=str(tmp_path / "bundle.json"))
        yield publisher
        await publisher.close()

    @pytest.fixture
    def read_published(self, tmp_path: Path) -> ReadPublished:
        async def read() -> bytes | None:
            target = tmp_path / "bundle.json"
            return await asyncio.to_thread(target.read_bytes) if target.exists() else None

        return read


@pytest.mark.asyncio
async def test_the_file_is_public_and_in_the_spiffe_format_by_default(
    host_services: HostServices, tmp_path: Path, bundle: Bundle
) -> None:
    target = tmp_path / "bundle.json"
    publisher = await configured(host_services, path=str(target))
    await publisher.publish_bundle(bundle)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert Bundle.from_spiffe_json(TD, target.read_bytes()) == bundle
    assert names_in(tmp_path) == ["bundle.json"]


@pytest.mark.asyncio
async def test_pem_holds_the_x509_authorities(
    host_services: HostServices, tmp_path: Path, bundle: Bundle
) -> None:
    target = tmp_path / "bundle.pem"
    publisher = await configured(host_services, path=str(target), format="pem")
    await publisher.publish_bundle(bundle)
    assert target.read_text() == bundle.to_pem()
    assert Bundle.from_pem(TD, target.read_bytes()).x509_authorities == bundle.x509_authorities


@pytest.mark.asyncio
async def test_jwks_is_a_plain_jwk_set_of_both_kinds_of_authority(
    host_services: HostServices, tmp_path: Path, bundle: Bundle
) -> None:
    target = tmp_path / "bundle.jwks"
    publisher = await configured(host_services, path=str(target), format="jwks")
    await publisher.publish_bundle(bundle)
    document = json.loads(target.read_text())
    assert set(document) == {"keys"}
    x509_key, jwt_key = document["keys"]
    assert "use" not in x509_key and "use" not in jwt_key
    assert len(x509_key["x5c"]) == 1
    assert jwt_key["kid"] == "k1"


@pytest.mark.asyncio
async def test_an_unchanged_bundle_is_not_written_again(
    host_services: HostServices, tmp_path: Path, bundle: Bundle
) -> None:
    target = tmp_path / "bundle.json"
    publisher = await configured(host_services, path=str(target))
    await publisher.publish_bundle(bundle)
    target.unlink()
    await publisher.publish_bundle(bundle)
    assert not target.exists()
    await publisher.publish_bundle(bundle.with_changes())
    assert Bundle.from_spiffe_json(TD, target.read_bytes()).sequence_number == 5


@pytest.mark.asyncio
async def test_a_failed_write_is_unavailable_and_the_next_attempt_writes(
    host_services: HostServices, tmp_path: Path, bundle: Bundle
) -> None:
    target = tmp_path / "bundle.json"
    publisher = await configured(host_services, path=str(target))
    target.mkdir()  # a file cannot replace a folder: the write fails as a full disk would
    with pytest.raises(UnavailableError, match=f"cannot write the bundle to {target}"):
        await publisher.publish_bundle(bundle)
    assert names_in(tmp_path) == ["bundle.json"]  # nothing left behind
    target.rmdir()
    await publisher.publish_bundle(bundle)
    assert Bundle.from_spiffe_json(TD, target.read_bytes()) == bundle


@pytest.mark.asyncio
async def test_a_missing_folder_stops_the_start(
    host_services: HostServices, tmp_path: Path
) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(PluginError, match=f"folder {missing} does not exist"):
        await configured(host_services, path=str(missing / "bundle.json"))


@pytest.mark.asyncio
async def test_a_path_naming_a_folder_stops_the_start(
    host_services: HostServices, tmp_path: Path
) -> None:
    with pytest.raises(PluginError, match="it is a folder"):
        await configured(host_services, path=str(tmp_path))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "file.path: "),
        (
            {"path": "/tmp/b.json", "format": "der"},
            "file.format: expected one of 'spiffe', 'jwks', 'pem'",
        ),
        ({"path": ".."}, "file.path: '..' names a folder, not a file"),
        ({"path": "/tmp/b.json", "mode": "0600"}, "file.mode: "),
    ],
)
def test_bad_settings_are_named(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(FileConfig, settings, path=PLUGIN_NAME)
    assert message in str(raised.value)


def test_the_hook_registers_a_bundle_publisher() -> None:
    (registration,) = pyspire_bundle_publishers()
    assert registration.name == PLUGIN_NAME
    assert isinstance(registration.factory(), BundlePublisher)


def test_the_readme_documents_the_settings() -> None:
    assert_readme_documents(README, FileConfig)
