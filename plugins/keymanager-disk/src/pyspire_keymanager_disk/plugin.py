"""The ``disk`` key manager and its registration.

Keys are held in memory for signing and written to one JSON file (see
:mod:`pyspire_keymanager_disk.keys_file`) after every change, so the server keeps its CA keys
and the agent its own key across restarts. One process owns the file; two processes sharing one
keys file would overwrite each other's keys.
"""

from __future__ import annotations

__all__ = ["DiskKeyManager", "pyspire_key_managers"]

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyspire_keymanager_disk.config import DiskKeyManagerConfig
from pyspire_keymanager_disk.keys_file import (
    encode_keys,
    ensure_private_directory,
    read_keys_file,
    write_keys_file,
)
from pyspire_sdk.errors import PluginError
from pyspire_sdk.keys import InProcessKeyManager, KeyRecord
from pyspire_sdk.plugin import HostServices, PluginRegistration, hookimpl
from pyspire_sdk.plugins.key_manager import KeyManager


def _load(path: Path) -> list[KeyRecord]:
    ensure_private_directory(path.parent)
    return read_keys_file(path)


def _store(path: Path, records: list[KeyRecord]) -> bool:
    return write_keys_file(path, encode_keys(records))


class DiskKeyManager(InProcessKeyManager):
    """A key manager that keeps its keys in a JSON file with mode 0600.

    ``configure`` reads the file (a missing file means no keys yet) and refuses one that is
    readable by others or not a valid keys file; every generated key is on disk before it is
    used. File work runs in a worker thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self._path: Path | None = None

    @property
    def keys_path(self) -> Path:
        """The absolute path of the keys file; set by ``configure``."""
        if self._path is None:
            raise PluginError("key manager is not configured")
        return self._path

    async def configure(self, config: DiskKeyManagerConfig, host: HostServices) -> None:
        """Read the keys file named by ``config`` (default ``<data_dir>/keys.json``)."""
        await super().configure(config, host)

    async def load_keys(
        self, config: DiskKeyManagerConfig, host: HostServices
    ) -> Sequence[KeyRecord]:
        self._path = config.resolve_keys_path(host.data_dir)
        records = await asyncio.to_thread(_load, self._path)
        host.logger.info("keys file loaded", path=str(self._path), keys=len(records))
        return records

    async def store_keys(self, keys: Mapping[str, KeyRecord]) -> None:
        path = self.keys_path
        durable = await asyncio.to_thread(_store, path, list(keys.values()))
        if not durable:
            self._logger.warning(
                "keys file replaced but its directory could not be synced",
                path=str(path),
            )


@hookimpl
def pyspire_key_managers() -> list[PluginRegistration[DiskKeyManagerConfig, KeyManager]]:
    """Offer the ``disk`` key manager."""
    return [
        PluginRegistration(
            name="disk",
            config_type=DiskKeyManagerConfig,
            factory=DiskKeyManager,
            description="private keys in a local JSON file with mode 0600; survive restarts",
        )
    ]
