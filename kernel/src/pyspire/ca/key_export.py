"""CA keys a key manager hands over, fetched once per key for signing outside it.

Signing a batch of leaves outside the key manager (in worker processes, or in a worker thread)
needs the CA key itself, which only key managers that hold keys in this process give
(:class:`~pyspire_sdk.plugins.key_manager.PrivateKeyExport`: the memory and disk key managers).
A key that stays in a KMS is not exported and is signed through its key manager.
"""

from __future__ import annotations

__all__ = ["ExportedKeys"]

from pyspire.ca.signing import ManagedKey
from pyspire_sdk.keys import private_key_from_pkcs8, public_key_der
from pyspire_sdk.plugins.key_manager import PrivateKeyExport


class ExportedKeys:
    """The PKCS#8 of each CA key its key manager exports, asked for once per key."""

    def __init__(self) -> None:
        self._exported: dict[tuple[int, str], bytes | None] = {}

    async def pkcs8(self, key: ManagedKey) -> bytes | None:
        """The PKCS#8 of ``key`` when its key manager exports it and what it exports is still
        the key with this public half (a key ID reused by a later key is not), else None."""
        # By key manager too: the same key may sit in two managers that differ in exporting it.
        cached = (id(key.key_manager), key.public_key.fingerprint)
        if cached in self._exported:
            return self._exported[cached]
        pkcs8: bytes | None = None
        manager = key.key_manager
        if isinstance(manager, PrivateKeyExport):
            exported = await manager.export_private_key(key.public_key.key_id)
            if public_key_der(private_key_from_pkcs8(exported)) == key.public_key.der:
                pkcs8 = exported
        self._exported[cached] = pkcs8
        return pkcs8
