"""In-process key helpers (``pyspire_sdk.keys``) and the in-process key manager base."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from pyspire_sdk import keys
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PluginError
from pyspire_sdk.keys import (
    InProcessKeyManager,
    KeyRecord,
    check_digest,
    generate_private_key,
    key_type_of,
    load_public_key,
    private_key_from_pkcs8,
    private_key_to_pkcs8,
    public_key_der,
    sign_digest,
    verify_digest_signature,
)
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyManager, KeyType
from pyspire_sdk.testing.key_manager_contract import KeyManagerContract

SHA256_DIGEST = HashAlgorithm.SHA256.digest(b"tbs")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048], ids=str)
async def test_generate_private_key_makes_the_asked_type(key_type: KeyType) -> None:
    key = await generate_private_key(key_type)
    assert key_type_of(key) is key_type
    assert key_type_of(key.public_key()) is key_type


async def test_generate_private_key_rejects_unknown_types() -> None:
    with pytest.raises(InvalidArgumentError, match="key_type"):
        await generate_private_key("ed25519")  # type: ignore[arg-type]


def test_key_type_of_rejects_unsupported_keys() -> None:
    with pytest.raises(InvalidArgumentError, match="curve secp521r1"):
        key_type_of(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(InvalidArgumentError, match="rsa key has 1024 bits"):
        key_type_of(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    with pytest.raises(InvalidArgumentError, match="Ed25519PrivateKey"):
        key_type_of(ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]


def test_pkcs8_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    for key in (ec.generate_private_key(ec.SECP384R1()), rsa_key):
        der = private_key_to_pkcs8(key)
        assert der.startswith(b"\x30")
        loaded = private_key_from_pkcs8(der)
        assert public_key_der(loaded) == public_key_der(key)


def test_pkcs8_rejects_garbage_and_unsupported_keys() -> None:
    with pytest.raises(InvalidArgumentError, match="not a valid unencrypted PKCS#8"):
        private_key_from_pkcs8(b"garbage")
    ed_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidArgumentError, match="not supported"):
        private_key_from_pkcs8(ed_key)
    p521 = private_key_to_pkcs8(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(InvalidArgumentError, match="secp521r1"):
        private_key_from_pkcs8(p521)


def test_pkcs8_error_never_shows_key_material() -> None:
    der = bytearray(private_key_to_pkcs8(ec.generate_private_key(ec.SECP256R1())))
    der[-5] ^= 0xFF
    secret_tail = bytes(der[-20:])
    with pytest.raises(InvalidArgumentError) as raised:
        private_key_from_pkcs8(bytes(der))
    assert secret_tail.hex() not in str(raised.value)
    assert repr(secret_tail) not in str(raised.value)


def test_load_public_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    loaded = load_public_key(public_key_der(key))
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    assert public_key_der(loaded) == public_key_der(key)
    with pytest.raises(InvalidArgumentError, match="SubjectPublicKeyInfo"):
        load_public_key(b"\x30\x00")
    ed_public = public_key_der(ed25519.Ed25519PrivateKey.generate().public_key())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not supported"):
        load_public_key(ed_public)


def test_check_digest() -> None:
    assert check_digest(bytearray(32), HashAlgorithm.SHA256) == bytes(32)
    assert check_digest(memoryview(bytes(64)), HashAlgorithm.SHA512) == bytes(64)
    with pytest.raises(
        InvalidArgumentError, match="digest is 31 bytes long; a sha256 digest is 32"
    ):
        check_digest(bytes(31), HashAlgorithm.SHA256)
    with pytest.raises(InvalidArgumentError, match="digest must be bytes, found str"):
        check_digest("00" * 32, HashAlgorithm.SHA256)


def test_ecdsa_signature_is_der_and_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signature = sign_digest(key, SHA256_DIGEST, HashAlgorithm.SHA256)
    utils.decode_dss_signature(signature)
    key.public_key().verify(signature, b"tbs", ec.ECDSA(hashes.SHA256()))
    assert verify_digest_signature(
        public_key_der(key), signature, SHA256_DIGEST, HashAlgorithm.SHA256
    )
    assert verify_digest_signature(key.public_key(), signature, SHA256_DIGEST, "sha256")  # type: ignore[arg-type]


def test_rsa_paddings_are_distinct(rsa_key: rsa.RSAPrivateKey) -> None:
    public = rsa_key.public_key()
    pkcs1 = sign_digest(rsa_key, SHA256_DIGEST, HashAlgorithm.SHA256)
    pss = sign_digest(rsa_key, SHA256_DIGEST, HashAlgorithm.SHA256, rsa_pss=True)
    public.verify(pkcs1, b"tbs", padding.PKCS1v15(), hashes.SHA256())
    public.verify(
        pss, b"tbs", padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
    )
    assert verify_digest_signature(public, pkcs1, SHA256_DIGEST, HashAlgorithm.SHA256)
    assert not verify_digest_signature(
        public, pkcs1, SHA256_DIGEST, HashAlgorithm.SHA256, rsa_pss=True
    )
    assert verify_digest_signature(public, pss, SHA256_DIGEST, HashAlgorithm.SHA256, rsa_pss=True)
    assert not verify_digest_signature(public, pss, SHA256_DIGEST, HashAlgorithm.SHA256)


def test_sign_digest_rejects_wrong_length(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(InvalidArgumentError, match="sha384 digest is 48"):
        sign_digest(rsa_key, SHA256_DIGEST, HashAlgorithm.SHA384)


def test_key_record_hides_the_private_key_from_repr() -> None:
    record = KeyRecord.of("x509-CA-A", ec.generate_private_key(ec.SECP256R1()))
    assert record.key_id == "x509-CA-A"
    assert record.key_type is KeyType.EC_P256
    assert "private" not in repr(record)


def test_module_surface_is_documented() -> None:
    for name in keys.__all__:
        assert hasattr(keys, name), name
    for name in ("InProcessKeyManager", "KeyRecord", "generate_private_key", "sign_digest"):
        assert getattr(keys, name).__doc__


class TestInProcessKeyManager(KeyManagerContract):
    """The base, used as is, keeps the whole contract (minus persistence)."""

    @pytest.fixture
    async def key_manager(self, host_services: HostServices) -> AsyncIterator[KeyManager]:
        manager = InProcessKeyManager()
        await manager.configure(NoConfig(), host_services)
        yield manager
        await manager.close()


class _FailingStore(InProcessKeyManager):
    """Stores the first table it is given, then fails (a disk that filled up)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[Mapping[str, KeyRecord]] = []
        self.fail = False

    async def store_keys(self, keys: Mapping[str, KeyRecord]) -> None:
        if self.fail:
            raise PluginError("cannot store keys: no space left on device")
        self.stored.append(dict(keys))


class _SlowStore(InProcessKeyManager):
    """Blocks in ``store_keys`` until released, to observe the table before the swap."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def store_keys(self, keys: Mapping[str, KeyRecord]) -> None:
        self.entered.set()
        await self.release.wait()


class _Preloaded(InProcessKeyManager):
    def __init__(self, records: Sequence[KeyRecord]) -> None:
        super().__init__()
        self.records = records

    async def load_keys(self, config: Any, host: HostServices) -> Sequence[KeyRecord]:
        return self.records


async def test_failed_store_keeps_the_old_key(host_services: HostServices) -> None:
    manager = _FailingStore()
    await manager.configure(NoConfig(), host_services)
    old = await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.fail = True
    with pytest.raises(PluginError, match="no space left"):
        await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    assert await manager.get_public_keys() == [old]
    signature = await manager.sign_digest("x509-CA-A", SHA256_DIGEST, HashAlgorithm.SHA256)
    assert verify_digest_signature(old, signature, SHA256_DIGEST, HashAlgorithm.SHA256)
    assert [list(table) for table in manager.stored] == [["x509-CA-A"]]


async def test_store_sees_the_whole_new_table(host_services: HostServices) -> None:
    manager = _FailingStore()
    await manager.configure(NoConfig(), host_services)
    await manager.generate_key("a", KeyType.EC_P256)
    await manager.generate_key("b", KeyType.EC_P256)
    await manager.generate_key("a", KeyType.EC_P384)
    assert [sorted(table) for table in manager.stored] == [["a"], ["a", "b"], ["a", "b"]]
    assert manager.stored[-1]["a"].key_type is KeyType.EC_P384


async def test_new_key_takes_effect_only_after_it_is_stored(host_services: HostServices) -> None:
    manager = _SlowStore()
    manager.release.set()
    await manager.configure(NoConfig(), host_services)
    old = await manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.release.clear()
    manager.entered.clear()
    replacing = asyncio.create_task(manager.generate_key("x509-CA-A", KeyType.EC_P256))
    await manager.entered.wait()
    assert await manager.get_public_key("x509-CA-A") == old
    manager.release.set()
    new = await replacing
    assert new != old
    assert await manager.get_public_key("x509-CA-A") == new


async def test_cancelled_generation_still_commits_what_it_stored(
    host_services: HostServices,
) -> None:
    manager = _SlowStore()
    await manager.configure(NoConfig(), host_services)
    generating = asyncio.create_task(manager.generate_key("x509-CA-A", KeyType.EC_P256))
    await manager.entered.wait()
    generating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await generating
    manager.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert [key.key_id for key in await manager.get_public_keys()] == ["x509-CA-A"]


async def test_loaded_keys_are_served(host_services: HostServices) -> None:
    record = KeyRecord.of("x509-CA-A", ec.generate_private_key(ec.SECP256R1()))
    manager = _Preloaded([record])
    await manager.configure(NoConfig(), host_services)
    assert await manager.get_public_keys() == [record.public_key]


async def test_duplicate_loaded_keys_are_refused(host_services: HostServices) -> None:
    record = KeyRecord.of("x509-CA-A", ec.generate_private_key(ec.SECP256R1()))
    manager = _Preloaded([record, record])
    with pytest.raises(PluginError, match="key_id 'x509-CA-A' is stored twice"):
        await manager.configure(NoConfig(), host_services)


async def test_life_cycle(host_services: HostServices) -> None:
    manager = InProcessKeyManager()
    with pytest.raises(PluginError, match="key manager is not configured"):
        await manager.get_public_keys()
    await manager.configure(NoConfig(), host_services)
    with pytest.raises(PluginError, match="already configured"):
        await manager.configure(NoConfig(), host_services)
    await manager.generate_key("k", KeyType.EC_P256)
    await manager.close()
    await manager.close()
    with pytest.raises(PluginError, match="key manager is closed"):
        await manager.sign_digest("k", SHA256_DIGEST, HashAlgorithm.SHA256)
    with pytest.raises(PluginError, match="key manager is closed"):
        await manager.generate_key("k", KeyType.EC_P256)


async def test_missing_key_message_names_the_key(host_services: HostServices) -> None:
    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    with pytest.raises(NotFoundError, match="key_id 'x509-CA-B' names no key"):
        await manager.get_public_key("x509-CA-B")


async def test_in_process_keys_can_be_exported_for_tls(host_services: HostServices) -> None:
    """The agent loads its SVID key into TLS contexts, which need the key itself."""
    from pyspire_sdk.keys import InProcessKeyManager, private_key_from_pkcs8, public_key_der
    from pyspire_sdk.plugin import NoConfig
    from pyspire_sdk.plugins.key_manager import KeyType, PrivateKeyExport

    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    public = await manager.generate_key("agent-svid", KeyType.EC_P256)
    assert isinstance(manager, PrivateKeyExport)
    exported = private_key_from_pkcs8(await manager.export_private_key("agent-svid"))
    assert public_key_der(exported) == public.der
    await manager.close()


@pytest.mark.parametrize(
    ("key_id", "error", "message"),
    [
        ("a/b", InvalidArgumentError, "contains '/'"),
        ("", InvalidArgumentError, "key_id is empty"),
        (7, InvalidArgumentError, "must be a string"),
        ("other", NotFoundError, "names no key"),
    ],
)
async def test_signing_with_a_bad_or_unknown_key_id_is_refused(
    host_services: HostServices, key_id: Any, error: type[Exception], message: str
) -> None:
    manager = InProcessKeyManager()
    await manager.configure(NoConfig(), host_services)
    public = await manager.generate_key("signer", KeyType.EC_P256)
    signature = await manager.sign_digest("signer", SHA256_DIGEST, HashAlgorithm.SHA256)
    assert verify_digest_signature(public, signature, SHA256_DIGEST, HashAlgorithm.SHA256)
    with pytest.raises(error, match=message):
        await manager.sign_digest(key_id, SHA256_DIGEST, HashAlgorithm.SHA256)
