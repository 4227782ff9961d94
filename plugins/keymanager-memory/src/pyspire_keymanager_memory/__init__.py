"""The ``memory`` key manager: private keys that live only as long as the process."""

from pyspire_keymanager_memory.plugin import MemoryKeyManager

__all__ = ["MemoryKeyManager"]
