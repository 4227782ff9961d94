"""Workload X509-SVID batches of a server without signing processes: signed in a worker thread
with the CA key when its key manager hands it over, through the key manager otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509

from pyspire.ca.thread_signer import MIN_THREADED_BATCH
from pyspire.ca.x509svid import CheckedKey
from pyspire.server.context import ServerContext
from pyspire_sdk.model import X509Svid

from .test_issuer_composition import entry, key


@pytest.fixture
def key_manager_signatures(server_context: ServerContext, monkeypatch: Any) -> list[str]:
    """The key IDs the CA's key manager signed a digest with, from now on."""
    manager = server_context.ca.x509_ca.key.key_manager
    signed: list[str] = []
    sign_digest = manager.sign_digest

    async def recorded(key_id: str, *args: Any, **kwargs: Any) -> bytes:
        signed.append(key_id)
        return await sign_digest(key_id, *args, **kwargs)

    monkeypatch.setattr(manager, "sign_digest", recorded)
    return signed


async def test_a_batch_is_signed_without_the_key_manager(
    server_context: ServerContext, key_manager_signatures: list[str]
) -> None:
    requests = [(entry(f"/w{n}"), CheckedKey.of(key())) for n in range(MIN_THREADED_BATCH)]
    results = await server_context.issuer.workload_x509_batch(requests)
    ca = server_context.ca.x509_ca.certificate
    for (requested, _), result in zip(requests, results, strict=True):
        assert isinstance(result, X509Svid)
        assert result.spiffe_id == requested.spiffe_id
        x509.load_der_x509_certificate(result.cert_chain[0]).verify_directly_issued_by(ca)
    assert key_manager_signatures == []


async def test_a_small_batch_is_signed_by_the_key_manager(
    server_context: ServerContext, key_manager_signatures: list[str]
) -> None:
    requests = [(entry(f"/w{n}"), CheckedKey.of(key())) for n in range(MIN_THREADED_BATCH - 1)]
    results = await server_context.issuer.workload_x509_batch(requests)
    assert all(isinstance(result, X509Svid) for result in results)
    key_id = server_context.ca.x509_ca.key.public_key.key_id
    assert key_manager_signatures == [key_id] * len(requests)
