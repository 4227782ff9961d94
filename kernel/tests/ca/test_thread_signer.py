"""Batches of leaves signed in a worker thread with a key the key manager hands over."""

from __future__ import annotations

import threading
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.ca import worker_jobs
from pyspire.ca.signing import ManagedKey
from pyspire.ca.thread_signer import MIN_THREADED_BATCH, ThreadSigner
from pyspire.ca.x509svid import LeafRequest, MintedSvid, mint_x509_svids
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugins.key_manager import KeyType
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

from .test_worker_pool import KeptKeys
from .test_x509svid import make_ca


async def test_a_batch_is_signed_off_the_event_loop_and_verifies(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, monkeypatch: object
) -> None:
    ca = await make_ca(key_manager, fake_clock, timedelta(days=1))
    requests = [
        LeafRequest(
            SpiffeId.parse(f"spiffe://example.org/w/{n}"),
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            timedelta(hours=1),
        )
        for n in range(MIN_THREADED_BATCH)
    ]
    signing_threads: set[int] = set()
    sign_payloads = worker_jobs.sign_payloads

    def recorded(pkcs8: bytes, algorithm: str, payloads: list[bytes]) -> list[bytes]:
        signing_threads.add(threading.get_ident())
        return sign_payloads(pkcs8, algorithm, payloads)

    monkeypatch.setattr(worker_jobs, "sign_payloads", recorded)  # type: ignore[attr-defined]
    minted = await mint_x509_svids(ca, requests, now=fake_clock.now(), signer=ThreadSigner())
    assert signing_threads and threading.get_ident() not in signing_threads
    for svid in minted:
        assert isinstance(svid, MintedSvid)
        x509.load_der_x509_certificate(svid.chain[0]).verify_directly_issued_by(ca.certificate)


async def test_a_kept_key_or_a_lone_leaf_is_left_to_the_key_manager(
    key_manager: InProcessKeyManager,
) -> None:
    public = await key_manager.generate_key("x509-ca", KeyType.EC_P256)
    signer = ThreadSigner()
    payloads = [b"tbs"] * MIN_THREADED_BATCH
    assert await signer.sign(ManagedKey(KeptKeys(key_manager), public), payloads) is None  # type: ignore[arg-type]
    exported = ManagedKey(key_manager, public)
    assert await signer.sign(exported, payloads[: MIN_THREADED_BATCH - 1]) is None
    signatures = await signer.sign(exported, payloads)
    assert signatures is not None and len(signatures) == MIN_THREADED_BATCH
    verifier = serialization.load_der_public_key(public.der)
    assert isinstance(verifier, ec.EllipticCurvePublicKey)
    for signature in signatures:
        verifier.verify(signature, b"tbs", ec.ECDSA(hashes.SHA256()))


async def test_a_reused_key_id_is_not_signed_with_the_later_key(
    key_manager: InProcessKeyManager,
) -> None:
    earlier = await key_manager.generate_key("x509-ca", KeyType.EC_P256)
    await key_manager.generate_key("x509-ca", KeyType.EC_P256)
    payloads = [b"tbs"] * MIN_THREADED_BATCH
    assert await ThreadSigner().sign(ManagedKey(key_manager, earlier), payloads) is None
