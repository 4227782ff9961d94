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
persistence tests are skipped otherwise. A key manager that offers
:class:`~pyspire_sdk.plugins.key_manager.MessageSigner` has its message signatures checked too
(they are what the host asks for), and the tests that are not about digests sign through
:func:`~pyspire_sdk.plugins.key_manager.sign_message`, the host's path. Set
:attr:`KeyManagerContract.digests_signed_faithfully` to False when the backend the tests run
against gets digest signatures wrong. Signatures are checked with ``cryptography`` against the
returned public keys, never against the key manager itself. Only one test makes an RSA-4096 key,
so the suite runs in seconds.
"""

from __future__ import annotations

__all__ = ["KeyManagerContract"]

import asyncio
import hashlib
from collections.abc import Sequence
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PluginError
from pyspire_sdk.keys import (
    key_type_of,
    load_public_key,
    verify_digest_signature,
    verify_message_signature,
)
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.key_manager import (
    MAX_KEY_ID_LENGTH,
    HashAlgorithm,
    KeyManager,
    KeyType,
    MessageSigner,
    PublicKey,
    sign_message,
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


MESSAGE_SIZES: Sequence[int] = (1, 700, 4096)
"""Lengths of the messages the suite signs: one byte, a TBSCertificate's size, and the longest
message a KMS signs whole."""


def _message_signer(key_manager: KeyManager) -> MessageSigner:
    if not isinstance(key_manager, MessageSigner):
        pytest.skip("this key manager signs digests only")
    return key_manager


class KeyManagerContract:
    """Tests every key manager must pass. The subclass provides the ``key_manager`` fixture."""

    digests_signed_faithfully: ClassVar[bool] = True
    """False when the backend this subclass tests against does not sign a digest as given
    (moto's KMS hashes a ``DIGEST`` message again): the digest tests then check that the key
    manager refuses each such signature with PluginError (it must verify what a remote backend
    returns) instead of checking its bytes. Message signing is checked in full either way."""

    async def _signed_digest(
        self,
        key_manager: KeyManager,
        public: PublicKey,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes | None:
        """The key manager's signature of ``digest``, checked to verify; None when digests
        are not signed faithfully here, after checking that the signature was refused."""
        if not self.digests_signed_faithfully:
            with pytest.raises(PluginError):
                await key_manager.sign_digest(
                    public.key_id, digest, hash_algorithm, rsa_pss=rsa_pss
                )
            return None
        signature = await key_manager.sign_digest(
            public.key_id, digest, hash_algorithm, rsa_pss=rsa_pss
        )
        assert verify_digest_signature(
            public, signature, digest, hash_algorithm, rsa_pss=rsa_pss
        ), f"{hash_algorithm} digest signature does not verify"
        return signature

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
            signature = await self._signed_digest(key_manager, public, digest, hash_algorithm)
            if signature is None:
                continue
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
            signature = await self._signed_digest(
                key_manager, public, digest, hash_algorithm, rsa_pss=True
            )
            if signature is None:
                continue
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
            await self._signed_digest(
                key_manager, public, digest, HashAlgorithm.SHA256, rsa_pss=rsa_pss
            )
        signature = await sign_message(key_manager, "x509-CA-B", b"tbs", HashAlgorithm.SHA256)
        crypto_key.verify(signature, b"tbs", padding.PKCS1v15(), hashes.SHA256())

    @pytest.mark.asyncio
    async def test_digest_is_signed_as_given_not_hashed_again(
        self, key_manager: KeyManager
    ) -> None:
        public = await key_manager.generate_key("signer", KeyType.EC_P256)
        message = b"the bytes to be signed"
        signature = await self._signed_digest(
            key_manager, public, _digest(HashAlgorithm.SHA256, message), HashAlgorithm.SHA256
        )
        if signature is None:
            return
        crypto_key = load_public_key(public.der)
        assert isinstance(crypto_key, ec.EllipticCurvePublicKey)
        crypto_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))

    # -- signing whole messages (MessageSigner) -----------------------------------------------

    @pytest.mark.parametrize("key_type", FAST_KEY_TYPES, ids=str)
    @pytest.mark.asyncio
    async def test_messages_are_signed_whole(
        self, key_manager: KeyManager, key_type: KeyType
    ) -> None:
        signer = _message_signer(key_manager)
        public = await key_manager.generate_key("signer", key_type)
        crypto_key = load_public_key(public.der)
        hash_algorithms = list(HashAlgorithm) if key_type.is_rsa else [key_type.hash_algorithm]
        for size in MESSAGE_SIZES:
            message = bytes(index % 251 for index in range(size))
            for hash_algorithm in hash_algorithms:
                signature = await signer.sign_message("signer", message, hash_algorithm)
                hash_object = _CRYPTOGRAPHY_HASHES[hash_algorithm]()
                if isinstance(crypto_key, ec.EllipticCurvePublicKey):
                    utils.decode_dss_signature(signature)  # DER Ecdsa-Sig-Value
                    crypto_key.verify(signature, message, ec.ECDSA(hash_object))
                else:
                    crypto_key.verify(signature, message, padding.PKCS1v15(), hash_object)
                assert verify_message_signature(public, signature, message, hash_algorithm)
                assert not verify_message_signature(
                    public, signature, message + b"x", hash_algorithm
                )

    @pytest.mark.asyncio
    async def test_bad_message_requests_are_rejected(self, key_manager: KeyManager) -> None:
        signer = _message_signer(key_manager)
        await key_manager.generate_key("signer", KeyType.EC_P256)
        with pytest.raises(InvalidArgumentError, match="hash_algorithm"):
            await signer.sign_message("signer", b"tbs", "sha1")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="message"):
            await signer.sign_message("signer", "tbs", HashAlgorithm.SHA256)  # type: ignore[arg-type]
        with pytest.raises(NotFoundError, match="x509-CA-B"):
            await signer.sign_message("x509-CA-B", b"tbs", HashAlgorithm.SHA256)
        with pytest.raises(InvalidArgumentError, match="key_id"):
            await signer.sign_message("x509-CA/B", b"tbs", HashAlgorithm.SHA256)

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
        jobs = [(key_id, f"message {index}".encode()) for index in range(40) for key_id in keys]
        signatures = await asyncio.gather(
            *(
                sign_message(key_manager, key_id, message, HashAlgorithm.SHA256)
                for key_id, message in jobs
            )
        )
        for (key_id, message), signature in zip(jobs, signatures, strict=True):
            assert verify_message_signature(keys[key_id], signature, message, HashAlgorithm.SHA256)

    # -- replacing ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_replacing_a_key_changes_it(self, key_manager: KeyManager) -> None:
        old = await key_manager.generate_key("x509-CA-A", KeyType.EC_P256)
        message = b"before rotation"
        sha256 = HashAlgorithm.SHA256
        old_signature = await sign_message(key_manager, "x509-CA-A", message, sha256)

        new = await key_manager.generate_key("x509-CA-A", KeyType.EC_P256)

        assert new.der != old.der
        assert new.fingerprint != old.fingerprint
        assert await key_manager.get_public_key("x509-CA-A") == new
        assert await key_manager.get_public_keys() == [new]
        assert verify_message_signature(old, old_signature, message, sha256)
        assert not verify_message_signature(new, old_signature, message, sha256)
        new_signature = await sign_message(key_manager, "x509-CA-A", message, sha256)
        assert verify_message_signature(new, new_signature, message, sha256)
        assert not verify_message_signature(old, new_signature, message, sha256)

    @pytest.mark.asyncio
    async def test_replacing_a_key_may_change_its_type(self, key_manager: KeyManager) -> None:
        await key_manager.generate_key("agent", KeyType.EC_P256)
        new = await key_manager.generate_key("agent", KeyType.EC_P384)
        assert (await key_manager.get_public_key("agent")).key_type is KeyType.EC_P384
        signature = await sign_message(key_manager, "agent", b"csr", HashAlgorithm.SHA384)
        assert verify_message_signature(new, signature, b"csr", HashAlgorithm.SHA384)

    @pytest.mark.asyncio
    async def test_old_key_signs_while_its_replacement_is_made(
        self, key_manager: KeyManager
    ) -> None:
        old = await key_manager.generate_key("x509-CA-A", KeyType.EC_P256)
        message = b"during rotation"
        sha256 = HashAlgorithm.SHA256
        replacing = asyncio.ensure_future(key_manager.generate_key("x509-CA-A", KeyType.RSA_2048))
        signatures = []
        while not replacing.done():
            signatures.append(await sign_message(key_manager, "x509-CA-A", message, sha256))
            await asyncio.sleep(0)
        new = await replacing
        assert signatures, "the replacement finished before any signature was asked for"
        for signature in signatures:
            assert verify_message_signature(
                old, signature, message, sha256
            ) or verify_message_signature(new, signature, message, sha256)
        assert verify_message_signature(old, signatures[0], message, sha256)

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
        with pytest.raises(NotFoundError, match="x509-CA-B"):
            await sign_message(key_manager, "x509-CA-B", b"x", HashAlgorithm.SHA256)

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
        with pytest.raises(InvalidArgumentError, match="key_id"):
            await sign_message(key_manager, key_id, b"x", HashAlgorithm.SHA256)
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
                message = b"after restart"
                signature = await sign_message(restarted, public.key_id, message, hash_algorithm)
                assert verify_message_signature(public, signature, message, hash_algorithm)
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
