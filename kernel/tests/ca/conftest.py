"""Fixtures for CA tests: an in-process key manager and an in-memory CA store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.spiffeid import TrustDomain


class MemoryCaStore:
    """The CA's view of a datastore, kept in memory (the datastore contract suite covers the
    real implementations of the same four methods)."""

    def __init__(self) -> None:
        self.journals: dict[str, bytes] = {}
        self.bundles: dict[TrustDomain, Bundle] = {}

    async def get_ca_journal(self, name: str) -> bytes | None:
        return self.journals.get(name)

    async def set_ca_journal(self, name: str, data: bytes) -> None:
        self.journals[name] = data

    async def update_bundle(
        self, trust_domain: TrustDomain, mutate: Callable[[Bundle | None], Bundle]
    ) -> Bundle:
        bundle = mutate(self.bundles.get(trust_domain))
        self.bundles[trust_domain] = bundle
        return bundle

    async def prune_bundle(self, trust_domain: TrustDomain, expires_before: datetime) -> bool:
        bundle = self.bundles.get(trust_domain)
        if bundle is None:
            return False
        x509_kept = tuple(
            a
            for a in bundle.x509_authorities
            if x509.load_der_x509_certificate(a.der).not_valid_after_utc >= expires_before
        )
        jwt_kept = tuple(
            a
            for a in bundle.jwt_authorities
            if a.expires_at is None or a.expires_at >= expires_before
        )
        if x509_kept == bundle.x509_authorities and jwt_kept == bundle.jwt_authorities:
            return False
        self.bundles[trust_domain] = replace(
            bundle,
            x509_authorities=x509_kept,
            jwt_authorities=jwt_kept,
            sequence_number=bundle.sequence_number + 1,
        )
        return True


@pytest.fixture
def ca_store() -> MemoryCaStore:
    return MemoryCaStore()


@pytest.fixture
async def key_manager(host_services: HostServices) -> AsyncIterator[InProcessKeyManager]:
    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    yield manager
    await manager.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
