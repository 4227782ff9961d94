"""Key managers: private keys that sign on request, wherever they live.

A key manager holds named private keys and signs with them. It never hands out a private key,
so the same interface fits keys held in the process (``memory``, ``disk``) and keys held by a KMS
or an HSM that the process never sees. The CA builds the bytes to be signed (a TBSCertificate, a
JWT signing input, a CSR's request info) itself and asks the key manager for a signature; only
that signature crosses the boundary.

Every key manager signs digests (:meth:`KeyManager.sign_digest`, SPIRE's ``SignData``). One that
can also sign whole messages says so by implementing :class:`MessageSigner`: a remote backend
then hashes the message itself (AWS KMS's ``MessageType=RAW``), so nothing depends on how it
treats a digest handed in from outside. :func:`sign_message` is the one way the host signs:
with the message when the key manager offers it, else with its digest.

The server keeps its CA keys here (key IDs ``x509-CA-A``, ``x509-CA-B``, ``JWT-Signer-A``,
``JWT-Signer-B``); the agent keeps its own key and workload keys here. Both use the same plugins.

Key IDs are chosen by the caller. They are non-empty, at most :data:`MAX_KEY_ID_LENGTH`
characters of printable ASCII, and contain no ``/`` (so a plugin may use them as a file name, a
KMS alias or a URL segment unchanged); :func:`validate_key_id` is the one place that rule lives.
"""

from __future__ import annotations

__all__ = [
    "MAX_KEY_ID_LENGTH",
    "HashAlgorithm",
    "KeyManager",
    "KeyType",
    "MessageSigner",
    "PrivateKeyExport",
    "PublicKey",
    "pyspire_key_managers",
    "sign_message",
    "validate_key_id",
]

import enum
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec

MAX_KEY_ID_LENGTH = 256
"""The longest key ID every key manager accepts, in characters."""


def validate_key_id(key_id: object) -> str:
    """Return ``key_id`` unchanged if it is a valid key ID, else raise InvalidArgumentError.

    Valid means: a non-empty ``str`` of at most :data:`MAX_KEY_ID_LENGTH` printable ASCII
    characters (space included) without ``/``. The rule is deliberately narrow so that every
    backend can store an ID verbatim.
    """
    if not isinstance(key_id, str):
        raise InvalidArgumentError(f"key_id must be a string, found {type(key_id).__name__}")
    if not key_id:
        raise InvalidArgumentError("key_id is empty")
    if len(key_id) > MAX_KEY_ID_LENGTH:
        raise InvalidArgumentError(
            f"key_id is {len(key_id)} characters long; the limit is {MAX_KEY_ID_LENGTH}"
        )
    for position, character in enumerate(key_id):
        if character == "/":
            raise InvalidArgumentError(f"key_id contains '/' at position {position}")
        if not " " <= character <= "~":
            raise InvalidArgumentError(
                f"key_id contains a character that is not printable ASCII at position {position}"
            )
    return key_id


class HashAlgorithm(enum.StrEnum):
    """The hash a digest was made with; it decides the digest's length and the signature's
    algorithm identifier."""

    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    @classmethod
    def parse(cls, value: object) -> HashAlgorithm:
        """The member named by ``value`` (a member or its value); InvalidArgumentError if none."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if member.value == value:
                    return member
        choices = ", ".join(repr(member.value) for member in cls)
        raise InvalidArgumentError(f"hash_algorithm must be one of {choices}, found {value!r}")

    @property
    def digest_size(self) -> int:
        """The length in bytes of a digest made with this hash."""
        return _DIGEST_SIZES[self]

    def digest(self, data: bytes) -> bytes:
        """Hash ``data``: the digest a caller passes to :meth:`KeyManager.sign_digest`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgumentError(f"message must be bytes, found {type(data).__name__}")
        return hashlib.new(self.value, data).digest()


_DIGEST_SIZES = {HashAlgorithm.SHA256: 32, HashAlgorithm.SHA384: 48, HashAlgorithm.SHA512: 64}


class KeyType(enum.StrEnum):
    """The kinds of keys a key manager makes. Every key manager supports all four."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_4096 = "rsa-4096"

    @classmethod
    def parse(cls, value: object) -> KeyType:
        """The member named by ``value`` (a member or its value); InvalidArgumentError if none."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if member.value == value:
                    return member
        choices = ", ".join(repr(member.value) for member in cls)
        raise InvalidArgumentError(f"key_type must be one of {choices}, found {value!r}")

    @property
    def is_ec(self) -> bool:
        """Whether keys of this type are elliptic-curve (ECDSA) keys."""
        return self in (KeyType.EC_P256, KeyType.EC_P384)

    @property
    def is_rsa(self) -> bool:
        """Whether keys of this type are RSA keys."""
        return not self.is_ec

    @property
    def key_size(self) -> int:
        """The key size in bits (the curve's field size for EC keys)."""
        return _KEY_SIZES[self]

    @property
    def hash_algorithm(self) -> HashAlgorithm:
        """The hash that goes with this key type: SHA-384 for P-384, SHA-256 otherwise."""
        return HashAlgorithm.SHA384 if self is KeyType.EC_P384 else HashAlgorithm.SHA256

    @property
    def signature_algorithm(self) -> str:
        """The JOSE ``alg`` for this key type with :attr:`hash_algorithm`: ES256, ES384 or RS256."""
        return _JOSE_ALGORITHMS[self]

    @property
    def x509_signature_algorithm_oid(self) -> str:
        """The dotted OID of the X.509 ``signatureAlgorithm`` for this key type with
        :attr:`hash_algorithm` and PKCS#1 v1.5 padding for RSA (ecdsa-with-SHA256,
        ecdsa-with-SHA384, sha256WithRSAEncryption)."""
        return _X509_SIGNATURE_OIDS[self]


_KEY_SIZES = {
    KeyType.EC_P256: 256,
    KeyType.EC_P384: 384,
    KeyType.RSA_2048: 2048,
    KeyType.RSA_4096: 4096,
}
_JOSE_ALGORITHMS = {
    KeyType.EC_P256: "ES256",
    KeyType.EC_P384: "ES384",
    KeyType.RSA_2048: "RS256",
    KeyType.RSA_4096: "RS256",
}
_X509_SIGNATURE_OIDS = {
    KeyType.EC_P256: "1.2.840.10045.4.3.2",
    KeyType.EC_P384: "1.2.840.10045.4.3.3",
    KeyType.RSA_2048: "1.2.840.113549.1.1.11",
    KeyType.RSA_4096: "1.2.840.113549.1.1.11",
}


@dataclass(frozen=True)
class PublicKey:
    """The public half of a managed key: what a key manager reveals about a key.

    ``der`` is the SubjectPublicKeyInfo in DER, the form certificates and JWKS conversions start
    from. Two ``PublicKey`` values are equal exactly when they describe the same key under the
    same ID and type.
    """

    key_id: str
    key_type: KeyType
    der: bytes

    def __post_init__(self) -> None:
        validate_key_id(self.key_id)
        object.__setattr__(self, "key_type", KeyType.parse(self.key_type))
        if not isinstance(self.der, bytes) or not self.der:
            raise InvalidArgumentError("der must be the non-empty DER of a SubjectPublicKeyInfo")

    @property
    def fingerprint(self) -> str:
        """Lower-case hex SHA-256 of :attr:`der`; stable across restarts and backends, so it can
        name the key in logs and tell a replaced key from the one before."""
        return hashlib.sha256(self.der).hexdigest()


@runtime_checkable
class KeyManager(Plugin, Protocol):
    """What every key manager object does once configured.

    All methods are safe to call concurrently. Errors: :class:`InvalidArgumentError` for a bad
    key ID, key type, hash algorithm or digest; :class:`NotFoundError` for a key ID that names no
    key; :class:`UnavailableError` when a remote backend cannot be reached;
    :class:`PluginError` when local storage fails.
    """

    async def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        """Make a new key of ``key_type`` under ``key_id`` and return its public half.

        A key already stored under ``key_id`` is replaced atomically: until the new key is
        durably stored, the old one keeps signing and is what :meth:`get_public_key` returns;
        afterwards only the new key is used. A failed generation leaves the old key in place.
        """
        ...

    async def get_public_key(self, key_id: str) -> PublicKey:
        """The public half of the key stored under ``key_id``; NotFoundError when there is none."""
        ...

    async def get_public_keys(self) -> list[PublicKey]:
        """The public halves of every stored key, ordered by key ID."""
        ...

    async def sign_digest(
        self,
        key_id: str,
        digest: bytes,
        hash_algorithm: HashAlgorithm,
        *,
        rsa_pss: bool = False,
    ) -> bytes:
        """Sign ``digest``, made with ``hash_algorithm``, with the key stored under ``key_id``.

        ``digest`` must be exactly ``hash_algorithm.digest_size`` bytes (InvalidArgumentError
        otherwise); it is signed as is, never hashed again. An ECDSA key returns the DER
        ``Ecdsa-Sig-Value``; an RSA key returns a PKCS#1 v1.5 signature, or an RSASSA-PSS
        signature with MGF1 over the same hash and a salt as long as the digest when
        ``rsa_pss`` is true. ``rsa_pss`` is ignored for ECDSA keys.
        """
        ...


@runtime_checkable
class MessageSigner(Protocol):
    """An optional capability: signing a whole message, hashed by the key manager.

    A key manager whose backend takes the message itself (AWS KMS's ``MessageType=RAW``, an
    HSM's sign-with-hash mechanism) implements this; the host then never hashes for it.
    In-process key managers offer it through :class:`~pyspire_sdk.keys.InProcessKeyManager`.
    """

    async def sign_message(
        self, key_id: str, message: bytes, hash_algorithm: HashAlgorithm
    ) -> bytes:
        """Sign ``message`` (of any length: a backend that takes messages whole only up to
        some size signs a longer one's digest) with the key stored under ``key_id``, hashing
        it with ``hash_algorithm``.

        The signature is the one :meth:`KeyManager.sign_digest` returns for
        ``hash_algorithm.digest(message)``: the DER ``Ecdsa-Sig-Value`` for an ECDSA key, a
        PKCS#1 v1.5 signature for an RSA key (the X.509 and JOSE forms the host uses; RSA-PSS
        is asked for through :meth:`KeyManager.sign_digest`). Errors as
        :class:`KeyManager`'s; InvalidArgumentError when ``message`` is not bytes.
        """
        ...


def _offers_message_signing(key_manager: KeyManager) -> bool:
    kind = type(key_manager)
    offered = _MESSAGE_SIGNERS.get(kind)
    if offered is None:
        offered = isinstance(key_manager, MessageSigner)
        _MESSAGE_SIGNERS[kind] = offered
    return offered


_MESSAGE_SIGNERS: dict[type, bool] = {}
"""Whether each key manager class offers :class:`MessageSigner`; a class does not change what
it offers, and a protocol check per signature would cost more than an EC signature's hashing."""


async def sign_message(
    key_manager: KeyManager, key_id: str, message: bytes, hash_algorithm: HashAlgorithm
) -> bytes:
    """Sign ``message`` with ``hash_algorithm`` through ``key_manager``: the whole message when
    it offers :class:`MessageSigner`, else its digest through :meth:`KeyManager.sign_digest`.
    Either way the result is the same kind of signature."""
    if _offers_message_signing(key_manager):
        signer: MessageSigner = key_manager  # type: ignore[assignment]
        return await signer.sign_message(key_id, message, hash_algorithm)
    return await key_manager.sign_digest(key_id, hash_algorithm.digest(message), hash_algorithm)


@runtime_checkable
class PrivateKeyExport(Protocol):
    """An optional capability of key managers that hold keys in this process.

    The agent needs its own SVID's private key in memory, because TLS libraries (Python's
    ``ssl`` included) take the key itself, not a signing callback; so the agent requires a key
    manager with this capability. The server uses it only to sign batches of leaves outside
    the key manager's interface (in its signing worker processes or a worker thread) with a CA
    key that already lives in its memory; a key manager without it signs every leaf itself.
    """

    async def export_private_key(self, key_id: str) -> bytes:
        """The PKCS#8 DER of the key stored under ``key_id``; NotFoundError when absent."""
        ...


@hookspec
def pyspire_key_managers() -> list[PluginRegistration[Any, KeyManager]]:  # type: ignore[empty-body]
    """Return the key managers this plugin module provides.

    Each registration's ``factory`` returns a new, unconfigured object that implements
    :class:`KeyManager`; the host configures it once with an instance of ``config_type`` and the
    host services, then calls its methods. ``configure`` must load (or reach) the key storage and
    raise :class:`~pyspire_sdk.errors.PluginError` when it cannot be used (unreadable, corrupt,
    permissions too open), so a broken key store stops the process at start, not at first
    signature. A module that provides no key manager returns an empty list (or does not
    implement this hook).

    The server and the agent each use exactly one key manager.
    """
