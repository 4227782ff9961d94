"""The ``memory`` key manager keeps the key-manager contract and forgets keys when it goes."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator

import pytest
from pyspire_keymanager_memory import plugin
from pyspire_keymanager_memory.plugin import MemoryKeyManager

from pyspire_sdk.config import describe_config, load_config
from pyspire_sdk.errors import ConfigError
from pyspire_sdk.plugin import ENTRY_POINT_GROUP, HostServices, NoConfig
from pyspire_sdk.plugins.key_manager import KeyManager, KeyType
from pyspire_sdk.testing.key_manager_contract import KeyManagerContract


class TestMemoryKeyManager(KeyManagerContract):
    @pytest.fixture
    async def key_manager(self, host_services: HostServices) -> AsyncIterator[KeyManager]:
        manager = MemoryKeyManager()
        await manager.configure(NoConfig(), host_services)
        yield manager
        await manager.close()


async def test_a_new_instance_starts_empty(host_services: HostServices) -> None:
    first = MemoryKeyManager()
    await first.configure(NoConfig(), host_services)
    await first.generate_key("x509-CA-A", KeyType.EC_P256)
    await first.close()

    second = MemoryKeyManager()
    await second.configure(NoConfig(), host_services)
    assert await second.get_public_keys() == []
    await second.close()


async def test_nothing_is_written_to_the_data_dir(host_services: HostServices) -> None:
    manager = MemoryKeyManager()
    await manager.configure(NoConfig(), host_services)
    await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    await manager.close()
    assert list(host_services.data_dir.iterdir()) == []


def test_registration() -> None:
    [registration] = plugin.pyspire_key_managers()
    assert registration.name == "memory"
    assert registration.config_type is NoConfig
    assert isinstance(registration.factory(), KeyManager)
    assert describe_config(registration.config_type) == []


def test_takes_no_settings() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(NoConfig, {"keys_path": "/tmp/keys.json"}, path="agent.plugins.key_manager")


def test_entry_point_is_installed() -> None:
    found = {
        entry_point.name: entry_point.value
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry_point.dist is not None
        and entry_point.dist.metadata["Name"] == "pyspire-keymanager-memory"
    }
    assert found == {"memory": "pyspire_keymanager_memory.plugin"}
