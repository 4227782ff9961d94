"""How a signature the key manager interface asks for becomes a KMS ``Sign`` request.

KMS signs a digest (``MessageType=DIGEST``) with a fixed algorithm per key spec: ECDSA_SHA_256
for P-256 and ECDSA_SHA_384 for P-384, and RSASSA_PKCS1_V1_5 or RSASSA_PSS with SHA-256, -384
or -512 for RSA (PSS with a salt as long as the digest, as the interface promises). The
interface also accepts, for an EC key, a digest made with another hash. ECDSA signs the
leftmost bits of a digest, as many as the curve order has, as an integer; so a longer digest is
cut to the curve's length and a shorter one is padded with leading zero bytes, which give the
same integer, and the signature is the one ECDSA over the given digest defines. Pure functions.
"""

from __future__ import annotations

__all__ = ["KEY_SPECS", "SignRequest", "sign_request"]

from dataclasses import dataclass

from pyspire_sdk.plugins.key_manager import HashAlgorithm, KeyType

KEY_SPECS: dict[KeyType, str] = {
    KeyType.EC_P256: "ECC_NIST_P256",
    KeyType.EC_P384: "ECC_NIST_P384",
    KeyType.RSA_2048: "RSA_2048",
    KeyType.RSA_4096: "RSA_4096",
}
"""The KMS key spec made for each key type."""

_EC_ALGORITHMS = {KeyType.EC_P256: "ECDSA_SHA_256", KeyType.EC_P384: "ECDSA_SHA_384"}
_SUFFIXES = {
    HashAlgorithm.SHA256: "SHA_256",
    HashAlgorithm.SHA384: "SHA_384",
    HashAlgorithm.SHA512: "SHA_512",
}


@dataclass(frozen=True)
class SignRequest:
    """The ``SigningAlgorithm`` and the ``Message`` (a digest) of one KMS ``Sign`` call."""

    algorithm: str
    digest: bytes


def sign_request(
    key_type: KeyType, digest: bytes, hash_algorithm: HashAlgorithm, *, rsa_pss: bool
) -> SignRequest:
    """The KMS request that signs ``digest`` (already checked to be a ``hash_algorithm``
    digest) with a key of ``key_type`` as :meth:`KeyManager.sign_digest` promises."""
    if key_type.is_ec:
        size = key_type.key_size // 8
        fitted = digest[:size] if len(digest) >= size else bytes(size - len(digest)) + digest
        return SignRequest(_EC_ALGORITHMS[key_type], fitted)
    scheme = "RSASSA_PSS" if rsa_pss else "RSASSA_PKCS1_V1_5"
    return SignRequest(f"{scheme}_{_SUFFIXES[hash_algorithm]}", digest)
