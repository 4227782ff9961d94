"""The ``memory`` key manager and its registration.

Keys are made and kept in this process and are gone when it exits. On the server that means a
new CA key (and so a new bundle entry) on every start; on the agent it means re-attesting after
a restart. It suits tests, demos and agents whose attestation is cheap to repeat.
"""

from __future__ import annotations

__all__ = ["MemoryKeyManager", "pyspire_key_managers"]

from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices, NoConfig, PluginRegistration, hookimpl
from pyspire_sdk.plugins.key_manager import KeyManager


class MemoryKeyManager(InProcessKeyManager):
    """A key manager whose keys exist only in this object; it takes no settings."""

    async def configure(self, config: NoConfig, host: HostServices) -> None:
        """Start with no keys."""
        await super().configure(config, host)


@hookimpl
def pyspire_key_managers() -> list[PluginRegistration[NoConfig, KeyManager]]:
    """Offer the ``memory`` key manager."""
    return [
        PluginRegistration(
            name="memory",
            config_type=NoConfig,
            factory=MemoryKeyManager,
            description="private keys in process memory; lost when the process exits",
        )
    ]
