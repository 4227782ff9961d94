"""The end-to-end tests' SVID store (:mod:`svidstore_directory`) keeps the SDK's SVID store
contract, so what the agent's tests learn through it holds for any store that does."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from svidstore_directory import DirectoryStoreConfig, DirectorySvidStore

from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.svid_store import SvidStore
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.svid_store_contract import ReadBack, SvidStoreContract


def _certificates(path: Path) -> tuple[bytes, ...]:
    return tuple(
        certificate.public_bytes(serialization.Encoding.DER)
        for certificate in x509.load_pem_x509_certificates(path.read_bytes())
    )


def _read(folder: Path) -> ReadBack | None:
    if not (folder / "svid.pem").exists():
        return None
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
    return ReadBack(
        spiffe_id=SpiffeId.parse((folder / "spiffe_id").read_text()),
        cert_chain=_certificates(folder / "svid.pem"),
        private_key=key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        bundle=_certificates(folder / "bundle.pem"),
        federated_bundles={
            TrustDomain(path.stem): _certificates(path)
            for path in (folder / "federated").glob("*.pem")
        },
    )


class TestDirectorySvidStoreContract(SvidStoreContract):
    @pytest_asyncio.fixture
    async def svid_store(
        self, tmp_path: Path, host_services: HostServices
    ) -> AsyncIterator[SvidStore]:
        store = DirectorySvidStore()
        await store.configure(DirectoryStoreConfig(directory=tmp_path / "store"), host_services)
        yield store
        await store.close()

    @pytest.fixture
    def svid_store_name(self) -> str:
        return "directory"

    @pytest.fixture
    def fresh_metadata(self) -> Callable[[], tuple[str, ...]]:
        return lambda: (f"name:{secrets.token_hex(6)}",)

    @pytest.fixture
    def read_stored(
        self, tmp_path: Path
    ) -> Callable[[tuple[str, ...]], Awaitable[ReadBack | None]]:
        async def reader(metadata: tuple[str, ...]) -> ReadBack | None:
            folder = tmp_path / "store" / metadata[0].removeprefix("name:")
            return await asyncio.to_thread(_read, folder)

        return reader

    @pytest.fixture
    def invalid_metadata(self) -> list[tuple[str, ...]]:
        return [(), ("folder:x",), ("name:../x",)]
