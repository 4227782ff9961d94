"""The contract every key manager keeps, as tests a plugin's test module inherits.

Subclass :class:`KeyManagerContract` and provide the fixture ``key_manager``: a configured
instance on empty storage, closed after the test::

    class TestDiskKeyManager(KeyManagerContract):
        @pytest_asyncio.fixture
        async def key_manager(self, host_services):
            manager = DiskKeyManager()
            await manager.configure(DiskConfig(), host_services)
            yield manager
            await manager.close()

        async def restarted_key_manager(self, host_services):
            manager = DiskKeyManager()
            await manager.configure(DiskConfig(), host_services)
            return manager

Override :meth:`KeyManagerContract.restarted_key_manager` when keys outlive the process; the
persistence tests are skipped otherwise. Signatures are checked with ``cryptography`` against the
returned public keys, never against the key manager itself. Only one test makes an RSA-4096 key,
so the suite runs in seconds.
"""

from __future__ import annotations

__all__ = ["KeyManagerContract"]

import asyncio
import hashlib
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from pyspire_sdk.errors import InvalidArgumentError, NotFoundError
from pyspire_sdk.keys import key_type_of, load_public_key, verify_digest_signature
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.key_manager import (
    MAX_KEY_ID_LENGTH,
    HashAlgorithm,
    KeyManager,
    KeyType,
    PublicKey,
)

FAST_KEY_TYPES: Sequence[KeyType] = (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
INVALID_KEY_IDS: Sequence[str] = (
    "",
    "a" * (MAX_KEY_ID_LENGTH + 1),
    "x509-CA/A",
    "/",
    "tab\there",
    "line\nbreak",
    "nul\x00",
    "del\x7f",
    "caf\u00e9",
)
_CRYPTOGRAPHY_HASHES: dict[HashAlgorithm, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}


def _digest(hash_algorithm: HashAlgorithm, message: bytes) -> bytes:
    return hashlib.new(hash_algorithm.value, message).digest()


class KeyManagerContract:
    """Tests every key manager must pass. The subclass provides the ``key_manager`` fixture."""

    @pytest.fixture
    def key_manager(self) -> KeyManager:
        """A configured key manager on empty storage; the subclass must override this."""
        pytest.fail("a KeyManagerContract subclass must provide the 'key_manager' fixture")

    async def restarted_key_manager(self, host_services: HostServices) -> KeyManager | None:
        """A newly configured instance on the storage the ``key_manager`` fixture used, as the
        next run of the process would see it; None (the default) when keys do not outlive the
        object, which skips the persistence tests. The suite closes what this returns."""
        return None

    async def _restart(self, host_services: HostServices) -> KeyManager:
        restarted = await self.restarted_key_manager(host_services)
        if restarted is None:
            pytest.skip("keys of this key manager do not outlive the object")
        return restarted

    # -- generating ---------------------------------------------------------------------------

    @pytest.mark.parametrize("key_type", FAST_KEY_TYPES, ids=str)
    @pytest.mark.asyncio
    async def test_generate_key_returns_its_public_key(
        self, key_manager: KeyManager, key_type: KeyType
    ) -> None:
        public = await key_manager.generate_key("x509-CA-A", key_type)

        assert isinstance(public, PublicKey)
        assert public.key_id == "x509-CA-A"
        assert public.key_type is key_type
        assert key_type_of(load_public_key(public.der)) is key_type
        assert public.fingerprint == hashlib.sha256(public.der).hexdigest()
        assert await key_manager.get_public_key("x509-CA-A") == public

    @pytest.mark.asyncio
    async def test_generate_key_accepts_the_longest_key_id(self, key_manager: KeyManager) -> None:
        key_id = "k" * MAX_KEY_ID_LENGTH
        public = await key_manager.generate_key(key_id, KeyType.EC_P256)
        assert (await key_manager.get_public_key(key_id)).der == public.der

    @pytest.mark.asyncio
    async def test_each_key_is_new(self, key_manager: KeyManager) -> None:
        first = await key_manager.generate_key("agent-A", KeyType.EC_P256)
        second = await key_manager.generate_key("agent-B", KeyType.EC_P256)
        assert first.der != second.der

    @pytest.mark.asyncio
    async def test_unknown_key_type_is_rejected(self, key_manager: KeyManager) -> None:
        with pytest.raises(InvalidArgumentError, match="key_type"):
            await key_manager.generate_key("x509-CA-A", "dsa-1024")  # type: ignore[arg-type]
        with pytest.raises(NotFoundError):
            await key_manager.get_public_key("x509-CA-A")

    # -- signing ------------------------------------------------------------------------------

    @pytest.mark.parametrize("key_type", FAST_KEY_TYPES, ids=str)
    @pytest.mark.asyncio
    async def test_signatures_verify_for_every_hash(
        self, key_manager: KeyManager, key_type: KeyType
    ) -> None:
        public = await key_manager.generate_key("signer", key_type)
        crypto_key = load_public_key(public.der)
        for hash_algorithm in HashAlgorithm:
            digest = _digest(hash_algorithm, b"tbs certificate bytes")
            signature = await key_manager.sign_digest("signer", digest, hash_algorithm)
            algorithm = utils.Prehashed(_CRYPTOGRAPHY_HASHES[hash_algorithm]())
            if isinstance(crypto_key, ec.EllipticCurvePublicKey):
                utils.decode_dss_signature(signature)  # DER Ecdsa-Sig-Value, not raw r||s
                crypto_key.verify(signature, digest, ec.ECDSA(algorithm))
            else:
                assert len(signature) == crypto_key.key_size // 8
                crypto_key.verify(signature, digest, padding.PKCS1v15(), algorithm)
            other = _digest(hash_algorithm, b"other bytes")
            assert not verify_digest_signature(public, signature, other, hash_algorithm)

    @pytest.mark.asyncio
    async def test_rsa_pss_signatures_verify_with_digest_length_salt(
        self, key_manager: KeyManager
    ) -> None:
        public = await key_manager.generate_key("signer", KeyType.RSA_2048)
        crypto_key = load_public_key(public.der)
        assert isinstance(crypto_key, rsa.RSAPublicKey)
        for hash_algorithm in HashAlgorithm:
            digest = _digest(hash_algorithm, b"jwt signing input")
            signature = await key_manager.sign_digest(
                "signer", digest, hash_algorithm, rsa_pss=True
            )
            hash_object = _CRYPTOGRAPHY_HASHES[hash_algorithm]()
            crypto_key.verify(
                signature,
                digest,
                padding.PSS(mgf=padding.MGF1(hash_object), salt_length=hash_algorithm.digest_size),
                utils.Prehashed(hash_object),
            )
            assert not verify_digest_signature(public, signature, digest, hash_algorithm)

    @pytest.mark.asyncio
    async def test_rsa_4096(self, key_manager: KeyManager) -> None:
        public = await key_manager.generate_key("x509-CA-B", KeyType.RSA_4096)
        crypto_key = load_public_key(public.der)
        assert isinstance(crypto_key, rsa.RSAPublicKey)
        assert crypto_key.key_size == 4096
        digest = _digest(HashAlgorithm.SHA256, b"tbs")
        for rsa_pss in (False, True):
            signature = await key_manager.sign_digest(
                "x509-CA-B", digest, HashAlgorithm.SHA256, rsa_pss=rsa_pss
            )
            assert verify_digest_signature(
                public, signature, digest, HashAlgorithm.SHA256, rsa_pss=rsa_pss
            )

    @pytest.mark.asyncio
    async def test_digest_is_signed_as_given_not_hashed_again(
        self, key_manager: KeyManager
    ) -> None:
        public = await key_manager.generate_key("signer", KeyType.EC_P256)
        message = b"the bytes to be signed"
        signature = await key_manager.sign_digest(
            "signer", _digest(HashAlgorithm.SHA256, message), HashAlgorithm.SHA256
        )
        crypto_key = load_public_key(public.der)
        assert isinstance(crypto_key, ec.EllipticCurvePublicKey)
        crypto_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))

    @pytest.mark.parametrize(
        ("hash_algorithm", "length"),
        [
            (HashAlgorithm.SHA256, 0),
            (HashAlgorithm.SHA256, 20),
            (HashAlgorithm.SHA256, 48),
            (HashAlgorithm.SHA384, 32),
            (HashAlgorithm.SHA512, 63),
        ],
    )
    @pytest.mark.asyncio
    async def test_wrong_digest_length_is_rejected(
        self, key_manager: KeyManager, hash_algorithm: HashAlgorithm, length: int
    ) -> None:
        await key_manager.generate_key("signer", KeyType.EC_P256)
        with pytest.raises(InvalidArgumentError, match="digest"):
            await key_manager.sign_digest("signer", b"\x01" * length, hash_algorithm)

    @pytest.mark.asyncio
    async def test_unknown_hash_algorithm_is_rejected(self, key_manager: KeyManager) -> None:
        await key_manager.generate_key("signer", KeyType.EC_P256)
        with pytest.raises(InvalidArgumentError, match="hash_algorithm"):
            await key_manager.sign_digest("signer", b"\x01" * 20, "sha1")  # type: ignore[arg-type]

    @pytest.mark.asyncio
    async def test_concurrent_signing(self, key_manager: KeyManager) -> None:
        keys = {
            "x509-CA-A": await key_manager.generate_key("x509-CA-A", KeyType.EC_P256),
            "JWT-Signer-A": await key_manager.generate_key("JWT-Signer-A", KeyType.RSA_2048),
        }
        jobs = [
            (key_id, _digest(HashAlgorithm.SHA256, f"message {index}".encode()))
            for index in range(40)
            for key_id in keys
        ]
        signatures = await asyncio.gather(
            *(
                key_manager.sign_digest(key_id, digest, HashAlgorithm.SHA256)
                for key_id, digest in jobs
            )
        )
        for (key_id, digest), signature in zip(jobs, signatures, strict=True):
            assert verify_digest_signature(keys[key_id], signature, digest, HashAlgorithm.SHA256)

    # -- replacing ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_replacing_a_key_changes_it(self, key_manager: KeyManager) -> None:
        old = await key_manager.generate_key("x509-CA-A", KeyType.EC_P256)
        digest = _digest(HashAlgorithm.SHA256, b"before rotation")
        old_signature = await key_manager.sign_digest("x509-CA-A", digest, HashAlgorithm.SHA256)

        new = await key_manager.generate_key("x509-CA-A", KeyType.EC_P256)

        assert new.der != old.der
        assert new.fingerprint != old.fingerprint
        assert await key_manager.get_public_key("x509-CA-A") == new
        assert await key_manager.get_public_keys() == [new]
        assert verify_digest_signature(old, old_signature, digest, HashAlgorithm.SHA256)
        assert not verify_digest_signature(new, old_signature, digest, HashAlgorithm.SHA256)
        new_signature = await key_manager.sign_digest("x509-CA-A", digest, HashAlgorithm.SHA256)
        assert verify_digest_signature(new, new_signature, digest, HashAlgorithm.SHA256)
        assert not verify_digest_signature(old, new_signature, digest, HashAlgorithm.SHA256)

    @pytest.mark.asyncio
    async def test_replacing_a_key_may_change_its_type(self, key_manager: KeyManager) -> None:
        await key_manager.generate_key("agent", KeyType.EC_P256)
        new = await key_manager.generate_key("agent", KeyType.EC_P384)
        assert (await key_manager.get_public_key("agent")).key_type is KeyType.EC_P384
        digest = _digest(HashAlgorithm.SHA384, b"csr")
        signature = await key_manager.sign_digest("agent", digest, HashAlgorithm.SHA384)
        assert verify_digest_signature(new, signature, digest, HashAlgorithm.SHA384)

    @pytest.mark.asyncio
    async def test_old_key_signs_while_its_replacement_is_made(
        self, key_manager: KeyManager
    ) -> None:
        old = await key_manager.generate_key("x509-CA-A", KeyType.EC_P256)
        digest = _digest(HashAlgorithm.SHA256, b"during rotation")
        replacing = asyncio.ensure_future(key_manager.generate_key("x509-CA-A", KeyType.RSA_2048))
        signatures = []
        while not replacing.done():
            signatures.append(
                await key_manager.sign_digest("x509-CA-A", digest, HashAlgorithm.SHA256)
            )
            await asyncio.sleep(0)
        new = await replacing
        assert signatures, "the replacement finished before any signature was asked for"
        for signature in signatures:
            assert verify_digest_signature(
                old, signature, digest, HashAlgorithm.SHA256
            ) or verify_digest_signature(new, signature, digest, HashAlgorithm.SHA256)
        assert verify_digest_signature(old, signatures[0], digest, HashAlgorithm.SHA256)

    @pytest.mark.asyncio
    async def test_concurrent_generation_keeps_every_key(self, key_manager: KeyManager) -> None:
        key_ids = [f"workload-{index}" for index in range(12)]
        generated = await asyncio.gather(
            *(key_manager.generate_key(key_id, KeyType.EC_P256) for key_id in key_ids)
        )
        assert await key_manager.get_public_keys() == sorted(generated, key=lambda k: k.key_id)

    # -- looking up ---------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_missing_key_is_not_found(self, key_manager: KeyManager) -> None:
        with pytest.raises(NotFoundError, match="x509-CA-B"):
            await key_manager.get_public_key("x509-CA-B")
        await key_manager.generate_key("x509-CA-A", KeyType.EC_P256)
        with pytest.raises(NotFoundError, match="x509-CA-B"):
            await key_manager.sign_digest(
                "x509-CA-B", _digest(HashAlgorithm.SHA256, b"x"), HashAlgorithm.SHA256
            )

    @pytest.mark.asyncio
    async def test_listing_keys(self, key_manager: KeyManager) -> None:
        assert await key_manager.get_public_keys() == []
        created = [
            await key_manager.generate_key("x509-CA-B", KeyType.EC_P384),
            await key_manager.generate_key("JWT-Signer-A", KeyType.EC_P256),
            await key_manager.generate_key("x509-CA-A", KeyType.RSA_2048),
        ]
        listed = await key_manager.get_public_keys()
        assert listed == sorted(created, key=lambda key: key.key_id)
        assert [key.key_id for key in listed] == ["JWT-Signer-A", "x509-CA-A", "x509-CA-B"]

    @pytest.mark.parametrize("key_id", INVALID_KEY_IDS, ids=repr)
    @pytest.mark.asyncio
    async def test_invalid_key_ids_are_rejected(self, key_manager: KeyManager, key_id: str) -> None:
        digest = _digest(HashAlgorithm.SHA256, b"x")
        with pytest.raises(InvalidArgumentError, match="key_id"):
            await key_manager.generate_key(key_id, KeyType.EC_P256)
        with pytest.raises(InvalidArgumentError, match="key_id"):
            await key_manager.get_public_key(key_id)
        with pytest.raises(InvalidArgumentError, match="key_id"):
            await key_manager.sign_digest(key_id, digest, HashAlgorithm.SHA256)
        assert await key_manager.get_public_keys() == []

    # -- persistence (only when restarted_key_manager is provided) ----------------------------

    @pytest.mark.asyncio
    async def test_keys_survive_a_restart(
        self, key_manager: KeyManager, host_services: HostServices
    ) -> None:
        created = [
            await key_manager.generate_key("x509-CA-A", KeyType.EC_P256),
            await key_manager.generate_key("x509-CA-B", KeyType.EC_P384),
            await key_manager.generate_key("JWT-Signer-A", KeyType.RSA_2048),
        ]
        restarted = await self._restart(host_services)
        try:
            assert await restarted.get_public_keys() == sorted(created, key=lambda k: k.key_id)
            for public in created:
                hash_algorithm = public.key_type.hash_algorithm
                digest = _digest(hash_algorithm, b"after restart")
                signature = await restarted.sign_digest(public.key_id, digest, hash_algorithm)
                assert verify_digest_signature(public, signature, digest, hash_algorithm)
        finally:
            await restarted.close()

    @pytest.mark.asyncio
    async def test_replacement_survives_a_restart(
        self, key_manager: KeyManager, host_services: HostServices
    ) -> None:
        await key_manager.generate_key("x509-CA-A", KeyType.EC_P256)
        new = await key_manager.generate_key("x509-CA-A", KeyType.EC_P384)
        restarted = await self._restart(host_services)
        try:
            assert await restarted.get_public_keys() == [new]
        finally:
            await restarted.close()
