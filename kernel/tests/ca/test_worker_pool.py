"""Signing worker processes: CSR checks and leaf signing give what the in-process path gives,
a key that stays in its key manager is signed there, and leaving the pool ends every worker."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.ca.signing import ManagedKey
from pyspire.ca.worker_pool import SigningPool
from pyspire.ca.x509svid import CheckedKey, LeafRequest, MintedSvid, mint_x509_svids
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugins.key_manager import KeyType, PublicKey
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

from .test_x509svid import make_ca


def csr_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[SigningPool]:
    async with SigningPool.running(2) as running:
        yield running


class KeptKeys:
    """A key manager whose keys never leave it, as a KMS's do: it only signs digests."""

    def __init__(self, inner: InProcessKeyManager) -> None:
        self._inner = inner
        self.signed = 0

    async def sign_digest(self, key_id: str, digest: bytes, hash_algorithm: object) -> bytes:
        self.signed += 1
        return await self._inner.sign_digest(key_id, digest, hash_algorithm)  # type: ignore[arg-type]


async def test_csr_checks_give_each_key_or_why_it_was_refused(pool: SigningPool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = csr_of(key)
    tampered = bytearray(good)
    tampered[-1] ^= 0x01
    checked = await pool.check_csrs([good, bytes(tampered), b"not a csr"] * 20)
    assert len(checked) == 60
    first, second, third = checked[:3]
    assert isinstance(first, CheckedKey)
    assert first == CheckedKey.of(key.public_key())
    assert isinstance(second, InvalidArgumentError)
    assert "invalid CSR signature" in str(second)
    assert isinstance(third, InvalidArgumentError)
    assert "malformed CSR" in str(third)


async def test_leaves_signed_in_workers_verify_with_the_ca_key(
    pool: SigningPool, key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    x509_ca = await make_ca(key_manager, fake_clock, timedelta(days=1))
    requests = [
        LeafRequest(
            SpiffeId.parse(f"spiffe://example.org/w/{n}"),
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            timedelta(hours=1),
        )
        for n in range(40)
    ]
    minted = await mint_x509_svids(x509_ca, requests, now=fake_clock.now(), signer=pool)
    for svid in minted:
        assert isinstance(svid, MintedSvid)
        leaf = x509.load_der_x509_certificate(svid.chain[0])
        leaf.verify_directly_issued_by(x509_ca.certificate)
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    # The same leaves through the key manager, one by one, are alike but for serial and key.
    inline = await mint_x509_svids(x509_ca, requests[:1], now=fake_clock.now())
    assert isinstance(inline[0], MintedSvid)
    assert inline[0].not_after == minted[0].not_after


async def test_a_key_its_manager_keeps_is_signed_by_the_manager(
    pool: SigningPool, key_manager: InProcessKeyManager
) -> None:
    inner = key_manager
    public = await inner.generate_key("x509-ca", KeyType.EC_P256)
    kept = KeptKeys(inner)
    key = ManagedKey(kept, public)  # type: ignore[arg-type]
    assert await pool.sign(key, [b"tbs"]) is None
    exported = ManagedKey(inner, public)
    signatures = await pool.sign(exported, [b"tbs"])
    assert signatures is not None
    [signature] = signatures
    verifier = serialization.load_der_public_key(public.der)
    assert isinstance(verifier, ec.EllipticCurvePublicKey)
    verifier.verify(signature, b"tbs", ec.ECDSA(hashes.SHA256()))


async def test_a_reused_key_id_is_not_signed_with_the_later_key(
    pool: SigningPool, key_manager: InProcessKeyManager
) -> None:
    manager = key_manager
    earlier = await manager.generate_key("x509-ca", KeyType.EC_P256)
    await manager.generate_key("x509-ca", KeyType.EC_P256)
    assert await pool.sign(ManagedKey(manager, earlier), [b"tbs"]) is None
    assert isinstance(earlier, PublicKey)


async def test_leaving_the_pool_ends_every_worker() -> None:
    async with SigningPool.running(2) as running:
        await running.check_csrs([csr_of(ec.generate_private_key(ec.SECP256R1()))])
        workers = running.worker_pids
        children = {child.pid for child in multiprocessing.active_children()}
        assert workers <= children
    children = {child.pid for child in multiprocessing.active_children()}
    assert not workers & children
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(InvalidArgumentError, match="at least 1"):
        async with SigningPool.running(0):
            pass
