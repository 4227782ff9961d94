"""The key-manager contract suite catches broken key managers.

Each broken key manager below keeps every rule but one; the named contract test must fail on
it, or the suite would wave through a plugin that breaks that rule.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from pyspire_sdk.errors import InvalidArgumentError, NotFoundError
from pyspire_sdk.keys import InProcessKeyManager, KeyRecord, check_digest, generate_private_key
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyManager, KeyType, PublicKey
from pyspire_sdk.testing.key_manager_contract import KeyManagerContract

_CRYPTOGRAPHY_HASHES: dict[HashAlgorithm, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}


class _SignsWithAnotherKey(InProcessKeyManager):
    """Reports the public half of a key other than the one it signs with."""

    async def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        await super().generate_key(key_id, key_type)
        return KeyRecord.of(key_id, await generate_private_key(key_type)).public_key


class _HashesAgain(InProcessKeyManager):
    """Treats the digest as a message and hashes it once more (the moto KMS DIGEST bug)."""

    async def sign_digest(
        self,
        key_id: str,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        check_digest(digest, hash_algorithm)
        return await super().sign_digest(
            key_id, hash_algorithm.digest(digest), hash_algorithm, rsa_pss=rsa_pss
        )


class _MessageHashedTwice(InProcessKeyManager):
    """Signs the digest of the message's digest (hashes a whole message once too often)."""

    async def sign_message(
        self, key_id: str, message: bytes, hash_algorithm: HashAlgorithm
    ) -> bytes:
        return await super().sign_message(key_id, hash_algorithm.digest(message), hash_algorithm)


class _MessageAsPss(InProcessKeyManager):
    """Signs RSA messages with PSS padding where PKCS#1 v1.5 is promised."""

    async def sign_message(
        self, key_id: str, message: bytes, hash_algorithm: HashAlgorithm
    ) -> bytes:
        return await self.sign_digest(
            key_id, hash_algorithm.digest(message), hash_algorithm, rsa_pss=True
        )


class _WrongPssSalt(InProcessKeyManager):
    """Uses the longest PSS salt instead of one as long as the digest."""

    async def sign_digest(
        self,
        key_id: str,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        record = self._record(key_id)
        if rsa_pss and isinstance(record.private_key, rsa.RSAPrivateKey):
            hash_object = _CRYPTOGRAPHY_HASHES[hash_algorithm]()
            return record.private_key.sign(
                check_digest(digest, hash_algorithm),
                padding.PSS(mgf=padding.MGF1(hash_object), salt_length=padding.PSS.MAX_LENGTH),
                utils.Prehashed(hash_object),
            )
        return await super().sign_digest(key_id, digest, hash_algorithm, rsa_pss=rsa_pss)


class _DeletesBeforeReplacing(InProcessKeyManager):
    """Drops the old key before the new one exists."""

    async def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        self._keys = {k: v for k, v in self._keys.items() if k != key_id}
        await asyncio.sleep(0.01)
        return await super().generate_key(key_id, key_type)


class _AcceptsAnyDigest(InProcessKeyManager):
    """Pads or truncates a digest of the wrong length instead of refusing it."""

    async def sign_digest(
        self,
        key_id: str,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        fixed = hashlib.new(hash_algorithm.value, digest).digest()
        return await super().sign_digest(key_id, fixed, hash_algorithm, rsa_pss=rsa_pss)


class _AcceptsSlashes(InProcessKeyManager):
    """Lets any key ID through generate_key."""

    async def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        if "/" in key_id:
            return PublicKey(key_id="x", key_type=key_type, der=b"\x30\x00")
        return await super().generate_key(key_id, key_type)


class _UnsortedListing(InProcessKeyManager):
    async def get_public_keys(self) -> list[PublicKey]:
        return list(reversed(await super().get_public_keys()))


class _ForgetsMissing(InProcessKeyManager):
    """Returns a placeholder for a missing key instead of raising NotFoundError."""

    async def get_public_key(self, key_id: str) -> PublicKey:
        try:
            return await super().get_public_key(key_id)
        except NotFoundError:
            return PublicKey(key_id=key_id, key_type=KeyType.EC_P256, der=b"\x30\x00")


class _SerializesSigning(InProcessKeyManager):
    """Can only sign one request at a time and fails on overlap."""

    def __init__(self) -> None:
        super().__init__()
        self._busy = False

    async def sign_digest(
        self,
        key_id: str,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        if self._busy:
            raise InvalidArgumentError("key_id is busy")
        self._busy = True
        try:
            await asyncio.sleep(0)
            return await super().sign_digest(key_id, digest, hash_algorithm, rsa_pss=rsa_pss)
        finally:
            self._busy = False


Run = Callable[[KeyManagerContract, KeyManager], Awaitable[None]]

CASES: list[tuple[type[InProcessKeyManager], str, Run]] = [
    (
        _SignsWithAnotherKey,
        "signatures",
        lambda suite, km: suite.test_signatures_verify_for_every_hash(km, KeyType.EC_P256),
    ),
    (
        _HashesAgain,
        "prehashed",
        lambda suite, km: suite.test_digest_is_signed_as_given_not_hashed_again(km),
    ),
    (
        _HashesAgain,
        "prehashed-rsa",
        lambda suite, km: suite.test_signatures_verify_for_every_hash(km, KeyType.RSA_2048),
    ),
    (
        _WrongPssSalt,
        "pss-salt",
        lambda suite, km: suite.test_rsa_pss_signatures_verify_with_digest_length_salt(km),
    ),
    (
        _DeletesBeforeReplacing,
        "atomic-replace",
        lambda suite, km: suite.test_old_key_signs_while_its_replacement_is_made(km),
    ),
    (
        _AcceptsAnyDigest,
        "digest-length",
        lambda suite, km: suite.test_wrong_digest_length_is_rejected(km, HashAlgorithm.SHA256, 20),
    ),
    (
        _AcceptsSlashes,
        "key-id",
        lambda suite, km: suite.test_invalid_key_ids_are_rejected(km, "x509-CA/A"),
    ),
    (
        _MessageHashedTwice,
        "message-hashed-twice",
        lambda suite, km: suite.test_messages_are_signed_whole(km, KeyType.EC_P256),
    ),
    (
        _MessageAsPss,
        "message-padding",
        lambda suite, km: suite.test_messages_are_signed_whole(km, KeyType.RSA_2048),
    ),
    (
        _MessageHashedTwice,
        "host-path",
        lambda suite, km: suite.test_concurrent_signing(km),
    ),
    (_UnsortedListing, "listing", lambda suite, km: suite.test_listing_keys(km)),
    (_ForgetsMissing, "not-found", lambda suite, km: suite.test_missing_key_is_not_found(km)),
    (_SerializesSigning, "concurrency", lambda suite, km: suite.test_concurrent_signing(km)),
]


@pytest.mark.parametrize(
    ("broken", "run"), [(c[0], c[2]) for c in CASES], ids=[c[1] for c in CASES]
)
async def test_contract_fails_a_broken_key_manager(
    broken: type[InProcessKeyManager], run: Run, host_services: HostServices
) -> None:
    manager = broken()
    await manager.configure(NoConfig(), host_services)
    try:
        with pytest.raises((Exception, pytest.fail.Exception)):  # any failure counts
            await run(KeyManagerContract(), manager)
    finally:
        await manager.close()


@pytest.mark.parametrize(
    ("broken", "run"), [(c[0], c[2]) for c in CASES], ids=[c[1] for c in CASES]
)
async def test_contract_passes_the_same_test_on_a_correct_key_manager(
    broken: type[InProcessKeyManager], run: Run, host_services: HostServices
) -> None:
    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    try:
        await run(KeyManagerContract(), manager)
    finally:
        await manager.close()


async def test_persistence_tests_skip_without_a_restart_hook(host_services: HostServices) -> None:
    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    try:
        with pytest.raises(pytest.skip.Exception):
            await KeyManagerContract().test_keys_survive_a_restart(manager, host_services)
    finally:
        await manager.close()


async def test_persistence_tests_fail_when_a_restart_loses_keys(
    host_services: HostServices,
) -> None:
    class Forgetful(KeyManagerContract):
        async def restarted_key_manager(self, host_services: HostServices) -> KeyManager:
            fresh = InProcessKeyManager()
            await fresh.configure(NoConfig(), host_services)
            return fresh

    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    try:
        with pytest.raises(AssertionError):
            await Forgetful().test_keys_survive_a_restart(manager, host_services)
    finally:
        await manager.close()


class _BackendSignsDigestsWrongly(KeyManagerContract):
    digests_signed_faithfully = False


async def test_a_backend_that_signs_digests_wrongly_must_see_them_refused(
    host_services: HostServices,
) -> None:
    """With ``digests_signed_faithfully`` off, a key manager that hands out a digest signature
    (wrong, as that backend makes it) fails: it must refuse what does not verify."""
    for broken in (InProcessKeyManager, _HashesAgain):
        manager = broken()
        await manager.configure(NoConfig(), host_services)
        try:
            with pytest.raises(pytest.fail.Exception):
                await _BackendSignsDigestsWrongly().test_signatures_verify_for_every_hash(
                    manager, KeyType.EC_P256
                )
        finally:
            await manager.close()


async def test_a_key_manager_that_signs_digests_only_skips_the_message_tests(
    host_services: HostServices,
) -> None:
    class DigestsOnly:
        sign_digest = InProcessKeyManager.sign_digest

    with pytest.raises(pytest.skip.Exception):
        await KeyManagerContract().test_bad_message_requests_are_rejected(DigestsOnly())  # type: ignore[arg-type]
