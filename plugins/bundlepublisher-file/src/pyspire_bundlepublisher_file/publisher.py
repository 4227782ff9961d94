"""The ``file`` bundle publisher: the trust bundle in a file, in a chosen format.

The file is replaced atomically (readers see the old bundle or the new one, never half of
one), with mode 0644 since a trust bundle is public. The SDK's ``PublishedBundleMemo`` leaves
the file alone for an unchanged bundle and serializes writes in the order they were asked, so
the newest bundle is the one that stays.
"""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "PUBLIC_FILE_MODE", "FileConfig", "FilePublisher"]

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.bundle_formats import BundleFormat, encode_bundle
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue, PluginError, UnavailableError
from pyspire_sdk.files import write_file_atomically
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.bundle_publisher import PublishedBundleMemo

PLUGIN_NAME = "file"
"""How operators name the publisher: ``[server.plugins.bundle_publisher.file]``."""

PUBLIC_FILE_MODE = 0o644
"""A trust bundle is public: anyone may read it."""


@dataclass(frozen=True, kw_only=True)
class FileConfig:
    """Settings of the ``file`` bundle publisher."""

    path: Path = setting(
        description="the file the trust bundle is written to; its folder must exist"
    )
    format: BundleFormat = setting(
        BundleFormat.SPIFFE,
        description="`spiffe` (SPIFFE bundle document), `jwks` (plain JWK Set of X.509 and JWT "
        "authorities) or `pem` (X.509 authorities only)",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """A path naming a folder cannot be replaced by a file."""
        if self.path.name in ("", ".", ".."):
            yield ConfigIssue("path", f"{str(self.path)!r} names a folder, not a file")


def _check_target(path: Path) -> str | None:
    """Why ``path`` cannot receive the bundle, or ``None``."""
    if not path.parent.is_dir():
        return f"folder {path.parent} does not exist"
    if path.is_dir():
        return "it is a folder"
    return None


class FilePublisher:
    """A :class:`~pyspire_sdk.plugins.bundle_publisher.BundlePublisher` writing one file."""

    def __init__(self) -> None:
        self._config: FileConfig | None = None
        self._memo = PublishedBundleMemo()

    async def configure(self, config: FileConfig, host: HostServices) -> None:
        """Check the file can be written there, so a typo stops the server at start."""
        problem = await asyncio.to_thread(_check_target, config.path)
        if problem is not None:
            raise PluginError(f"path {config.path}: {problem}")
        if self._config != config:
            self._memo.forget()
        self._config = config

    async def close(self) -> None:
        """Nothing to release."""
        self._config = None

    async def publish_bundle(self, bundle: Bundle) -> None:
        """Write ``bundle`` unless it is the one written last."""
        config = self._config
        if config is None:
            raise PluginError("bundle publisher is not configured")
        async with self._memo.publishing(bundle) as changed:
            if changed:
                data = encode_bundle(bundle, config.format)
                await self._write(config.path, data)

    @staticmethod
    async def _write(path: Path, data: bytes) -> None:
        try:
            await asyncio.to_thread(write_file_atomically, path, data, mode=PUBLIC_FILE_MODE)
        except OSError as error:
            raise UnavailableError(
                f"cannot write the bundle to {path}: {error.strerror or error}"
            ) from None
