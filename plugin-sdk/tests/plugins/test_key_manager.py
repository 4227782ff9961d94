"""The key-manager interface: key types, hash algorithms, public keys, key IDs, the hookspec."""

from __future__ import annotations

import hashlib
import inspect

import pluggy
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import SignatureAlgorithmOID

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugin import PROJECT_NAME, PluginRegistration, hookimpl
from pyspire_sdk.plugins import key_manager
from pyspire_sdk.plugins.key_manager import (
    MAX_KEY_ID_LENGTH,
    HashAlgorithm,
    KeyManager,
    KeyType,
    PublicKey,
    validate_key_id,
)


def test_key_types_are_the_four_supported() -> None:
    assert [member.value for member in KeyType] == ["ec-p256", "ec-p384", "rsa-2048", "rsa-4096"]


@pytest.mark.parametrize(
    ("key_type", "jose", "hash_algorithm", "oid", "is_ec", "size"),
    [
        (
            KeyType.EC_P256,
            "ES256",
            HashAlgorithm.SHA256,
            SignatureAlgorithmOID.ECDSA_WITH_SHA256,
            True,
            256,
        ),
        (
            KeyType.EC_P384,
            "ES384",
            HashAlgorithm.SHA384,
            SignatureAlgorithmOID.ECDSA_WITH_SHA384,
            True,
            384,
        ),
        (
            KeyType.RSA_2048,
            "RS256",
            HashAlgorithm.SHA256,
            SignatureAlgorithmOID.RSA_WITH_SHA256,
            False,
            2048,
        ),
        (
            KeyType.RSA_4096,
            "RS256",
            HashAlgorithm.SHA256,
            SignatureAlgorithmOID.RSA_WITH_SHA256,
            False,
            4096,
        ),
    ],
)
def test_key_type_algorithms(
    key_type: KeyType,
    jose: str,
    hash_algorithm: HashAlgorithm,
    oid: object,
    is_ec: bool,
    size: int,
) -> None:
    assert key_type.signature_algorithm == jose
    assert key_type.hash_algorithm is hash_algorithm
    assert key_type.x509_signature_algorithm_oid == oid.dotted_string  # type: ignore[attr-defined]
    assert key_type.is_ec is is_ec
    assert key_type.is_rsa is not is_ec
    assert key_type.key_size == size


def test_key_type_parse() -> None:
    assert KeyType.parse("rsa-4096") is KeyType.RSA_4096
    assert KeyType.parse(KeyType.EC_P384) is KeyType.EC_P384
    for wrong in ("EC-P256", "ec-p521", "", 256, None):
        with pytest.raises(InvalidArgumentError, match="key_type must be one of 'ec-p256'"):
            KeyType.parse(wrong)


@pytest.mark.parametrize(
    ("hash_algorithm", "reference"),
    [
        (HashAlgorithm.SHA256, hashes.SHA256()),
        (HashAlgorithm.SHA384, hashes.SHA384()),
        (HashAlgorithm.SHA512, hashes.SHA512()),
    ],
)
def test_hash_algorithm_sizes_and_digest(
    hash_algorithm: HashAlgorithm, reference: hashes.HashAlgorithm
) -> None:
    assert hash_algorithm.digest_size == reference.digest_size
    assert hash_algorithm.digest(b"tbs") == hashlib.new(reference.name, b"tbs").digest()


def test_hash_algorithm_parse() -> None:
    assert HashAlgorithm.parse("sha512") is HashAlgorithm.SHA512
    for wrong in ("sha1", "SHA256", "md5", 1):
        with pytest.raises(InvalidArgumentError, match="hash_algorithm must be one of"):
            HashAlgorithm.parse(wrong)


@pytest.mark.parametrize(
    "key_id",
    ["x509-CA-A", "JWT-Signer-B", "a", "k" * MAX_KEY_ID_LENGTH, "with space", "~!@#$%^&*()"],
)
def test_valid_key_ids(key_id: str) -> None:
    assert validate_key_id(key_id) == key_id


@pytest.mark.parametrize(
    ("key_id", "reason"),
    [
        ("", "key_id is empty"),
        ("k" * (MAX_KEY_ID_LENGTH + 1), "key_id is 257 characters long; the limit is 256"),
        ("x509/CA", "key_id contains '/' at position 4"),
        ("tab\t", "key_id contains a character that is not printable ASCII at position 3"),
        ("\n", "not printable ASCII at position 0"),
        ("\x7f", "not printable ASCII"),
        ("caf\u00e9", "not printable ASCII"),
        (b"bytes", "key_id must be a string, found bytes"),
        (None, "key_id must be a string, found NoneType"),
    ],
)
def test_invalid_key_ids(key_id: object, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        validate_key_id(key_id)
    assert reason in str(raised.value)
    assert str(raised.value) == str(raised.value).rstrip(".")


def test_public_key_fingerprint_and_equality() -> None:
    public = PublicKey(key_id="x509-CA-A", key_type=KeyType.EC_P256, der=b"\x30\x03\x02\x01\x01")
    assert public.fingerprint == hashlib.sha256(b"\x30\x03\x02\x01\x01").hexdigest()
    assert public == PublicKey(key_id="x509-CA-A", key_type="ec-p256", der=public.der)  # type: ignore[arg-type]
    assert public != PublicKey(key_id="x509-CA-B", key_type=KeyType.EC_P256, der=public.der)
    with pytest.raises(AttributeError):
        public.key_id = "other"  # type: ignore[misc]


def test_public_key_rejects_bad_fields() -> None:
    with pytest.raises(InvalidArgumentError, match="key_id"):
        PublicKey(key_id="a/b", key_type=KeyType.EC_P256, der=b"\x30\x00")
    with pytest.raises(InvalidArgumentError, match="key_type"):
        PublicKey(key_id="a", key_type="dsa", der=b"\x30\x00")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="der"):
        PublicKey(key_id="a", key_type=KeyType.EC_P256, der=b"")


def test_key_manager_protocol_extends_the_plugin_life_cycle() -> None:
    for method in ("configure", "close", "generate_key", "get_public_key", "get_public_keys"):
        assert inspect.iscoroutinefunction(getattr(KeyManager, method))
    assert inspect.iscoroutinefunction(KeyManager.sign_digest)
    assert inspect.signature(KeyManager.sign_digest).parameters["rsa_pss"].kind is (
        inspect.Parameter.KEYWORD_ONLY
    )


def test_hookspec_collects_registrations() -> None:
    class Module:
        @hookimpl
        def pyspire_key_managers(self) -> list[PluginRegistration[object, object]]:
            return [PluginRegistration(name="fake", config_type=object, factory=object)]

    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(key_manager)
    manager.register(Module())
    results = manager.hook.pyspire_key_managers()
    assert [[registration.name for registration in result] for result in results] == [["fake"]]


def test_public_surface_is_documented() -> None:
    for name in key_manager.__all__:
        item = getattr(key_manager, name)
        if callable(item) or isinstance(item, type):
            assert inspect.getdoc(item), f"{name} has no docstring"
