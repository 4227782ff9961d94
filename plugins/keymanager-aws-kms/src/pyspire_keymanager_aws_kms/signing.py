"""How a signature the key manager interface asks for becomes a KMS ``Sign`` request.

KMS signs with a fixed algorithm per key spec: ECDSA_SHA_256 for P-256 and ECDSA_SHA_384 for
P-384, and RSASSA_PKCS1_V1_5 or RSASSA_PSS with SHA-256, -384 or -512 for RSA (PSS with a salt
as long as the digest, as the interface promises).

A message is sent whole (``MessageType=RAW``, KMS hashes it) when it is 1 to
:data:`MAX_RAW_MESSAGE` bytes long and the key's algorithm hashes with the hash asked for; that
is the host's every signature in practice (a TBSCertificate, a CSR's request info or a JWT
signing input is a few hundred bytes to 2 KiB, and the host hashes with the key type's own
hash). Otherwise (a longer or empty message, an EC key asked for another hash) it is hashed here
and the digest is sent (``MessageType=DIGEST``), as a digest from :meth:`KeyManager.sign_digest`
always is.

ECDSA signs the leftmost bits of a digest, as many as the curve order has, as an integer; so a
digest made with another hash is cut to the curve's length, or padded with leading zero bytes,
which give the same integer, and the signature is the one ECDSA over the given digest defines.
Pure functions.
"""

from __future__ import annotations

__all__ = ["KEY_SPECS", "MAX_RAW_MESSAGE", "SignRequest", "digest_request", "message_request"]

from dataclasses import dataclass
from typing import Literal

from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyType

KEY_SPECS: dict[KeyType, str] = {
    KeyType.EC_P256: "ECC_NIST_P256",
    KeyType.EC_P384: "ECC_NIST_P384",
    KeyType.RSA_2048: "RSA_2048",
    KeyType.RSA_4096: "RSA_4096",
}
"""The KMS key spec made for each key type."""

MAX_RAW_MESSAGE = 4096
"""The longest message KMS signs whole, in bytes."""

_EC_ALGORITHMS = {KeyType.EC_P256: "ECDSA_SHA_256", KeyType.EC_P384: "ECDSA_SHA_384"}
_SUFFIXES = {
    HashAlgorithm.SHA256: "SHA_256",
    HashAlgorithm.SHA384: "SHA_384",
    HashAlgorithm.SHA512: "SHA_512",
}


@dataclass(frozen=True)
class SignRequest:
    """The ``SigningAlgorithm``, ``Message`` and ``MessageType`` of one KMS ``Sign`` call."""

    algorithm: str
    message: bytes
    message_type: Literal["RAW", "DIGEST"]


def digest_request(
    key_type: KeyType, digest: bytes, hash_algorithm: HashAlgorithm, *, rsa_pss: bool
) -> SignRequest:
    """The KMS request that signs ``digest`` (already checked to be a ``hash_algorithm``
    digest) with a key of ``key_type`` as :meth:`KeyManager.sign_digest` promises."""
    if key_type.is_ec:
        size = key_type.key_size // 8
        fitted = digest[:size] if len(digest) >= size else bytes(size - len(digest)) + digest
        return SignRequest(_EC_ALGORITHMS[key_type], fitted, "DIGEST")
    scheme = "RSASSA_PSS" if rsa_pss else "RSASSA_PKCS1_V1_5"
    return SignRequest(f"{scheme}_{_SUFFIXES[hash_algorithm]}", digest, "DIGEST")


def message_request(
    key_type: KeyType, message: bytes, hash_algorithm: HashAlgorithm
) -> SignRequest:
    """The KMS request that signs ``message`` hashed with ``hash_algorithm`` with a key of
    ``key_type`` as :meth:`MessageSigner.sign_message` promises: the message itself when KMS
    can take it whole, else its digest."""
    if len(message) <= MAX_RAW_MESSAGE and message:
        if key_type.is_rsa:
            return SignRequest(f"RSASSA_PKCS1_V1_5_{_SUFFIXES[hash_algorithm]}", message, "RAW")
        if hash_algorithm is key_type.hash_algorithm:
            return SignRequest(_EC_ALGORITHMS[key_type], message, "RAW")
    return digest_request(key_type, hash_algorithm.digest(message), hash_algorithm, rsa_pss=False)
