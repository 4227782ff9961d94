"""Private keys held in this process: what every in-process key manager shares.

Key managers that keep private keys in memory (``memory``) or in a local file (``disk``) differ
only in where the keys rest between runs. Everything else lives here, once: generating a key for
a :class:`~pyspire_sdk.plugins.key_manager.KeyType`, signing a digest that was hashed elsewhere
or a whole message, PKCS#8 serialization, telling the type of a key, verifying a signature, and
:class:`InProcessKeyManager`, a complete key manager whose subclasses only say how keys are
loaded at start and stored after each change.
"""

from __future__ import annotations

__all__ = [
    "InProcessKeyManager",
    "KeyRecord",
    "PrivateKey",
    "PublicKeyObject",
    "check_digest",
    "generate_private_key",
    "key_type_of",
    "load_public_key",
    "private_key_from_pkcs8",
    "private_key_to_pkcs8",
    "public_key_der",
    "sign_digest",
    "verify_digest_signature",
    "verify_message_signature",
]

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import structlog
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from structlog.typing import FilteringBoundLogger

from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PluginError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyType, PublicKey, validate_key_id

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""A private key of one of the supported :class:`KeyType` values."""

PublicKeyObject: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
"""A ``cryptography`` public key of one of the supported :class:`KeyType` values."""

_RSA_PUBLIC_EXPONENT = 65537
_CURVES: dict[KeyType, type[ec.EllipticCurve]] = {
    KeyType.EC_P256: ec.SECP256R1,
    KeyType.EC_P384: ec.SECP384R1,
}
_HASHES: dict[HashAlgorithm, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA256: hashes.SHA256,
    HashAlgorithm.SHA384: hashes.SHA384,
    HashAlgorithm.SHA512: hashes.SHA512,
}


def _generate_sync(key_type: KeyType) -> PrivateKey:
    if key_type.is_ec:
        return ec.generate_private_key(_CURVES[key_type]())
    return rsa.generate_private_key(
        public_exponent=_RSA_PUBLIC_EXPONENT, key_size=key_type.key_size
    )


async def generate_private_key(key_type: KeyType) -> PrivateKey:
    """A fresh private key of ``key_type`` from the operating system's CSPRNG.

    RSA generation takes from tens of milliseconds to seconds, so it runs in a worker thread
    and never stalls the event loop; EC generation is cheaper than a thread hop and runs inline.
    """
    key_type = KeyType.parse(key_type)
    if key_type.is_rsa:
        return await asyncio.to_thread(_generate_sync, key_type)
    return _generate_sync(key_type)


def key_type_of(key: PrivateKey | PublicKeyObject) -> KeyType:
    """The :class:`KeyType` of a private or public key; InvalidArgumentError for any other key
    (another curve, another RSA size, another algorithm)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        for key_type, curve in _CURVES.items():
            if isinstance(key.curve, curve):
                return key_type
        raise InvalidArgumentError(f"key uses curve {key.curve.name}, which is not supported")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        for key_type in (KeyType.RSA_2048, KeyType.RSA_4096):
            if key.key_size == key_type.key_size:
                return key_type
        raise InvalidArgumentError(f"rsa key has {key.key_size} bits; supported are 2048 and 4096")
    raise InvalidArgumentError(f"key of type {type(key).__name__} is not supported")


def public_key_der(key: PrivateKey | PublicKeyObject) -> bytes:
    """The SubjectPublicKeyInfo DER of a key's public half."""
    public = (
        key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else key
    )
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(der: bytes) -> PublicKeyObject:
    """Parse a SubjectPublicKeyInfo DER into a ``cryptography`` key of a supported type;
    InvalidArgumentError when it does not parse or is of an unsupported type."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise InvalidArgumentError(f"der is not a valid SubjectPublicKeyInfo: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidArgumentError(f"public key of type {type(key).__name__} is not supported")
    key_type_of(key)
    return key


def private_key_to_pkcs8(key: PrivateKey) -> bytes:
    """The unencrypted PKCS#8 DER of ``key``. The result is secret: never log it."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pkcs8(der: bytes) -> PrivateKey:
    """Parse an unencrypted PKCS#8 DER private key of a supported type.

    Raises InvalidArgumentError when the bytes do not parse or hold an unsupported key; the
    message never contains key material.
    """
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidArgumentError(
            "private key is not a valid unencrypted PKCS#8 DER key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidArgumentError(f"private key of type {type(key).__name__} is not supported")
    key_type_of(key)
    return key


def check_digest(digest: object, hash_algorithm: HashAlgorithm) -> bytes:
    """Return ``digest`` as ``bytes`` if it is a digest of ``hash_algorithm``'s length, else
    raise InvalidArgumentError naming both lengths."""
    if not isinstance(digest, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"digest must be bytes, found {type(digest).__name__}")
    data = bytes(digest)
    if len(data) != hash_algorithm.digest_size:
        raise InvalidArgumentError(
            f"digest is {len(data)} bytes long; a {hash_algorithm.value} digest is "
            f"{hash_algorithm.digest_size} bytes"
        )
    return data


# Signature algorithm objects are immutable; building them per signature costs several ABC
# instance checks, so each one is made once.
_ECDSA_PREHASHED: dict[HashAlgorithm, ec.ECDSA] = {
    algorithm: ec.ECDSA(utils.Prehashed(hash_type())) for algorithm, hash_type in _HASHES.items()
}
_PREHASHED: dict[HashAlgorithm, utils.Prehashed] = {
    algorithm: utils.Prehashed(hash_type()) for algorithm, hash_type in _HASHES.items()
}


def _pss(hash_algorithm: HashAlgorithm) -> padding.PSS:
    return padding.PSS(
        mgf=padding.MGF1(_HASHES[hash_algorithm]()),
        salt_length=hash_algorithm.digest_size,
    )


def sign_digest(
    key: PrivateKey, digest: bytes, hash_algorithm: HashAlgorithm, *, rsa_pss: bool = False
) -> bytes:
    """Sign a precomputed ``digest`` the way :meth:`KeyManager.sign_digest` promises: DER ECDSA,
    or RSA PKCS#1 v1.5, or RSA-PSS (MGF1 with the same hash, salt length = digest length).

    Synchronous and CPU-bound; RSA signing with a large key is worth a worker thread.
    """
    hash_algorithm = HashAlgorithm.parse(hash_algorithm)
    return _sign_checked(key, check_digest(digest, hash_algorithm), hash_algorithm, rsa_pss)


def _sign_checked(
    key: PrivateKey, data: bytes, hash_algorithm: HashAlgorithm, rsa_pss: bool
) -> bytes:
    """:func:`sign_digest` for a digest already checked against a parsed ``hash_algorithm``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, _ECDSA_PREHASHED[hash_algorithm])
    if isinstance(key, rsa.RSAPrivateKey):
        scheme = _pss(hash_algorithm) if rsa_pss else padding.PKCS1v15()
        return key.sign(data, scheme, _PREHASHED[hash_algorithm])
    raise InvalidArgumentError(f"key of type {type(key).__name__} is not supported")


def verify_digest_signature(
    public_key: PublicKey | PublicKeyObject | bytes,
    signature: bytes,
    digest: bytes,
    hash_algorithm: HashAlgorithm,
    *,
    rsa_pss: bool = False,
) -> bool:
    """Whether ``signature`` over ``digest`` verifies with ``public_key`` (a
    :class:`PublicKey`, its SPKI DER, or a ``cryptography`` public key).

    Returns False for a signature that does not verify, including one made with the other RSA
    padding; raises InvalidArgumentError for a malformed digest or public key.
    """
    hash_algorithm = HashAlgorithm.parse(hash_algorithm)
    data = check_digest(digest, hash_algorithm)
    if isinstance(public_key, PublicKey):
        key: PublicKeyObject = load_public_key(public_key.der)
    elif isinstance(public_key, bytes):
        key = load_public_key(public_key)
    else:
        key = public_key
    prehashed = utils.Prehashed(_HASHES[hash_algorithm]())
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(prehashed))
        else:
            scheme = _pss(hash_algorithm) if rsa_pss else padding.PKCS1v15()
            key.verify(signature, data, scheme, prehashed)
    except InvalidSignature:
        return False
    return True


def verify_message_signature(
    public_key: PublicKey | PublicKeyObject | bytes,
    signature: bytes,
    message: bytes,
    hash_algorithm: HashAlgorithm,
) -> bool:
    """Whether ``signature`` is a signature of ``message`` hashed with ``hash_algorithm`` as
    :meth:`~pyspire_sdk.plugins.key_manager.MessageSigner.sign_message` promises (DER ECDSA or
    RSA PKCS#1 v1.5), with ``public_key`` in any form :func:`verify_digest_signature` takes."""
    hash_algorithm = HashAlgorithm.parse(hash_algorithm)
    return verify_digest_signature(
        public_key, signature, hash_algorithm.digest(message), hash_algorithm
    )


@dataclass(frozen=True)
class KeyRecord:
    """A private key with its public half, as an in-process key manager holds it."""

    public_key: PublicKey
    private_key: PrivateKey = field(repr=False)

    @classmethod
    def of(cls, key_id: str, private_key: PrivateKey) -> KeyRecord:
        """The record of ``private_key`` stored under ``key_id``; its type is read from the key."""
        return cls(
            public_key=PublicKey(
                key_id=validate_key_id(key_id),
                key_type=key_type_of(private_key),
                der=public_key_der(private_key),
            ),
            private_key=private_key,
        )

    @property
    def key_id(self) -> str:
        """The ID the key is stored under."""
        return self.public_key.key_id

    @property
    def key_type(self) -> KeyType:
        """The key's type, read from the key itself."""
        return self.public_key.key_type


class InProcessKeyManager:
    """A complete :class:`~pyspire_sdk.plugins.key_manager.KeyManager` whose private keys live in
    this process's memory; it also offers
    :class:`~pyspire_sdk.plugins.key_manager.MessageSigner` and
    :class:`~pyspire_sdk.plugins.key_manager.PrivateKeyExport`.

    Subclasses decide where keys rest between runs by overriding :meth:`load_keys` (called once
    by :meth:`configure`) and :meth:`store_keys` (called with the whole new key table before it
    takes effect). Used as is, keys last as long as the object.

    Guarantees: the key table is an immutable snapshot swapped in one assignment, so a signature
    always uses either the old or the new key, never a half-written one; :meth:`generate_key`
    calls :meth:`store_keys` one at a time and swaps the table only after it returned, so the old
    key keeps signing until the new one is stored, and a failed store leaves it in place. Once
    :meth:`store_keys` started, the swap completes even if the caller is cancelled, so memory and
    storage never disagree.
    """

    def __init__(self) -> None:
        self._keys: Mapping[str, KeyRecord] = {}
        self._write_lock = asyncio.Lock()
        self._state = "new"
        self._logger: FilteringBoundLogger = structlog.get_logger()

    async def load_keys(self, config: Any, host: HostServices) -> Sequence[KeyRecord]:
        """The keys stored from an earlier run; raise PluginError when storage is unusable.

        The base keeps nothing between runs and returns no keys.
        """
        return ()

    async def store_keys(self, keys: Mapping[str, KeyRecord]) -> None:
        """Durably store ``keys``, the complete key table about to take effect.

        Raise PluginError when the keys cannot be stored; the table is then left unchanged. The
        base keeps nothing between runs and stores nothing.
        """

    async def configure(self, config: Any, host: HostServices) -> None:
        """Load the stored keys; after this the key manager serves requests."""
        if self._state != "new":
            raise PluginError(f"key manager is already {self._state}")
        self._logger = host.logger
        records = await self.load_keys(config, host)
        table: dict[str, KeyRecord] = {}
        for record in records:
            if record.key_id in table:
                raise PluginError(f"key_id {record.key_id!r} is stored twice")
            table[record.key_id] = record
        self._keys = table
        self._state = "configured"
        self._logger.info("key manager ready", keys=len(table))

    async def close(self) -> None:
        """Forget every key; later calls raise PluginError. Closing twice is harmless."""
        self._keys = {}
        self._state = "closed"

    def _require_open(self) -> None:
        if self._state != "configured":
            detail = "not configured" if self._state == "new" else "closed"
            raise PluginError(f"key manager is {detail}")

    def _record(self, key_id: str) -> KeyRecord:
        # Every stored ID passed validate_key_id on the way in, so a string found in the table
        # needs no second look; anything else is validated for the error it deserves.
        if type(key_id) is str and self._state == "configured":
            record = self._keys.get(key_id)
            if record is not None:
                return record
        validate_key_id(key_id)
        self._require_open()
        record = self._keys.get(key_id)
        if record is None:
            raise NotFoundError(f"key_id {key_id!r} names no key")
        return record

    async def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        validate_key_id(key_id)
        key_type = KeyType.parse(key_type)
        self._require_open()
        record = KeyRecord.of(key_id, await generate_private_key(key_type))
        await asyncio.shield(self._commit(record))
        self._logger.info(
            "key generated",
            key_id=key_id,
            key_type=key_type.value,
            fingerprint=record.public_key.fingerprint,
        )
        return record.public_key

    async def _commit(self, record: KeyRecord) -> None:
        async with self._write_lock:
            self._require_open()
            updated = {**self._keys, record.key_id: record}
            await self.store_keys(updated)
            self._keys = updated

    async def export_private_key(self, key_id: str) -> bytes:
        """The PKCS#8 DER of a key held here (see :class:`PrivateKeyExport`)."""
        return private_key_to_pkcs8(self._record(key_id).private_key)

    async def get_public_key(self, key_id: str) -> PublicKey:
        return self._record(key_id).public_key

    async def get_public_keys(self) -> list[PublicKey]:
        self._require_open()
        keys = self._keys
        return [keys[key_id].public_key for key_id in sorted(keys)]

    async def sign_digest(
        self,
        key_id: str,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        hash_algorithm = HashAlgorithm.parse(hash_algorithm)
        data = check_digest(digest, hash_algorithm)
        record = self._record(key_id)
        if isinstance(record.private_key, rsa.RSAPrivateKey):
            return await asyncio.to_thread(
                _sign_checked, record.private_key, data, hash_algorithm, rsa_pss
            )
        return _sign_checked(record.private_key, data, hash_algorithm, rsa_pss)

    async def sign_message(
        self, key_id: str, message: bytes, hash_algorithm: HashAlgorithm
    ) -> bytes:
        """Hash ``message`` here and sign the digest (see
        :class:`~pyspire_sdk.plugins.key_manager.MessageSigner`): in this process the two are
        the same operation."""
        hash_algorithm = HashAlgorithm.parse(hash_algorithm)
        return await self.sign_digest(key_id, hash_algorithm.digest(message), hash_algorithm)
