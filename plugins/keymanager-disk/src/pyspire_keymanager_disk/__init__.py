"""The ``disk`` key manager: private keys kept in one JSON file that survives restarts."""

from pyspire_keymanager_disk.config import DiskKeyManagerConfig
from pyspire_keymanager_disk.plugin import DiskKeyManager

__all__ = ["DiskKeyManager", "DiskKeyManagerConfig"]
