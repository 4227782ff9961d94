"""An SVID store plugin for end-to-end tests: each stored SVID becomes PEM files in a folder.

It depends on the SDK only, as every plugin does, and is installed for a real agent process as
a distribution written on the fly (:mod:`pyspire_sdk.testing.distributions`), so the agent finds
it through its entry point. An entry addresses it with selectors of type ``directory``:
``directory:name:<folder>`` (required; letters, digits, ``-`` and ``_``). The folder
``<directory>/<folder>`` then holds ``svid.pem`` (the chain, leaf first), ``key.pem`` (PKCS#8),
``bundle.pem``, ``federated/<trust domain>.pem`` and ``spiffe_id``. While a file named
``UNAVAILABLE`` exists in ``<directory>``, every call fails as a store that cannot be reached.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire_sdk.config import setting
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.files import make_private_directory, write_private_file
from pyspire_sdk.plugin import HostServices, PluginRegistration, hookimpl
from pyspire_sdk.plugins.svid_store import StoredSvid

NAME = "directory"
UNAVAILABLE = "UNAVAILABLE"
_FOLDER = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, kw_only=True)
class DirectoryStoreConfig:
    """Where the stored SVIDs go."""

    directory: Path = setting(description="directory holding one folder per stored SVID")


def _folder(metadata: tuple[str, ...]) -> str:
    names = []
    for value in metadata:
        key, _, argument = value.partition(":")
        if key != "name":
            raise InvalidArgumentError(f"metadata {value!r}: unknown key {key!r}, expected name")
        names.append(argument)
    if len(names) != 1 or not _FOLDER.fullmatch(names[0]):
        raise InvalidArgumentError(
            f"metadata {list(metadata)!r}: expected one name:<folder> of letters, digits, - or _"
        )
    return names[0]


def _pem(certificates: tuple[bytes, ...]) -> bytes:
    return b"".join(
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        for der in certificates
    )


class DirectorySvidStore:
    """Writes stored SVIDs as files (see the module documentation)."""

    def __init__(self) -> None:
        self._directory: Path | None = None

    async def configure(self, config: Any, host: HostServices) -> None:
        del host
        self._directory = Path(config.directory)
        await asyncio.to_thread(make_private_directory, self._directory)

    async def close(self) -> None:
        return None

    def _root(self) -> Path:
        if self._directory is None:
            raise UnavailableError("the directory svid store is not configured")
        if (self._directory / UNAVAILABLE).exists():
            raise UnavailableError(f"{self._directory} is marked unavailable")
        return self._directory

    async def put_x509_svid(self, svid: StoredSvid) -> None:
        folder = self._root() / _folder(svid.metadata)
        await asyncio.to_thread(self._write, folder, svid)

    async def delete_x509_svid(self, metadata: tuple[str, ...]) -> None:
        folder = self._root() / _folder(metadata)
        await asyncio.to_thread(shutil.rmtree, folder, True)

    @staticmethod
    def _write(folder: Path, svid: StoredSvid) -> None:
        make_private_directory(folder / "federated")
        key = serialization.load_der_private_key(svid.private_key, password=None)
        write_private_file(
            folder / "key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        write_private_file(folder / "bundle.pem", _pem(svid.bundle))
        for trust_domain, roots in svid.federated_bundles.items():
            write_private_file(folder / "federated" / f"{trust_domain.name}.pem", _pem(roots))
        write_private_file(folder / "spiffe_id", str(svid.spiffe_id).encode())
        # Last: a reader that sees the new chain sees the new key and bundles too.
        write_private_file(folder / "svid.pem", _pem(svid.cert_chain))


@hookimpl
def pyspire_svid_stores() -> list[PluginRegistration[DirectoryStoreConfig, DirectorySvidStore]]:
    return [
        PluginRegistration(
            name=NAME,
            config_type=DirectoryStoreConfig,
            factory=DirectorySvidStore,
            description="writes stored svids as pem files (end-to-end tests)",
        )
    ]
