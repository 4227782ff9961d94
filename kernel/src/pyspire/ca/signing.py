"""Certificates and JWTs signed by a key that lives in a key manager.

``cryptography`` signs certificates only with keys it holds, while CA keys may live in a KMS. So
we let ``cryptography`` build and sign the certificate with a throwaway key of the same algorithm,
keep its TBSCertificate and signatureAlgorithm (with the authority key identifier set explicitly,
neither depends on the throwaway key), have the key manager sign the TBS bytes (the whole
message where the key manager signs messages, else their digest; see
:func:`pyspire_sdk.plugins.key_manager.sign_message`), and join the parts again
(:mod:`pyspire.der`). The result is indistinguishable from a certificate signed in-process
and verifies with ``cryptography`` and OpenSSL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pyspire.der import join_signed, replace_csr_public_key, split_signed
from pyspire_sdk.plugins.key_manager import (
    HashAlgorithm,
    KeyManager,
    KeyType,
    PublicKey,
    sign_message,
)

_HASHES: dict[HashAlgorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
    HashAlgorithm.SHA256: hashes.SHA256(),
    HashAlgorithm.SHA384: hashes.SHA384(),
    HashAlgorithm.SHA512: hashes.SHA512(),
}
_KEY_HASHES: dict[KeyType, HashAlgorithm] = {
    key_type: key_type.hash_algorithm for key_type in KeyType
}
_throwaway_keys: dict[KeyType, CertificateIssuerPrivateKeyTypes] = {}
_throwaway_lock = asyncio.Lock()


def _make_throwaway_key(key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    # The size only shapes the throwaway signature, which is discarded; 2048 bits suffices for
    # either RSA size because the signature algorithm identifier is the same.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def throwaway_key(key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
    """A process-wide throwaway key per key type, made once (RSA off the event loop)."""
    key = _throwaway_keys.get(key_type)
    if key is not None:
        return key
    async with _throwaway_lock:
        key = _throwaway_keys.get(key_type)
        if key is None:
            key = await asyncio.to_thread(_make_throwaway_key, key_type)
            _throwaway_keys[key_type] = key
    return key


@dataclass(frozen=True)
class ManagedKey:
    """A signing key held by a key manager, known to us by its public half."""

    key_manager: KeyManager
    public_key: PublicKey

    @property
    def key_type(self) -> KeyType:
        return self.public_key.key_type

    @property
    def hash_algorithm(self) -> HashAlgorithm:
        return self.public_key.key_type.hash_algorithm

    def load_public_key(self) -> PublicKeyTypes:
        """The public key as a ``cryptography`` object."""
        return serialization.load_der_public_key(self.public_key.der)

    async def sign(self, data: bytes) -> bytes:
        """Sign ``data``, hashed with the key type's hash, through the key manager."""
        algorithm = _KEY_HASHES[self.public_key.key_type]
        return await sign_message(self.key_manager, self.public_key.key_id, data, algorithm)


async def sign_certificate(builder: x509.CertificateBuilder, key: ManagedKey) -> x509.Certificate:
    """Sign a fully prepared certificate builder with ``key``.

    The builder must already carry an AuthorityKeyIdentifier (for self-signed certificates, the
    one of the certificate's own key): otherwise ``cryptography`` would derive it from the
    throwaway key.
    """
    template = builder.sign(await throwaway_key(key.key_type), _HASHES[key.hash_algorithm])
    tbs, algorithm, _ = split_signed(template.public_bytes(serialization.Encoding.DER))
    signature = await key.sign(template.tbs_certificate_bytes)
    return x509.load_der_x509_certificate(join_signed(tbs, algorithm, signature))


async def sign_csr(builder: x509.CertificateSigningRequestBuilder, key: ManagedKey) -> bytes:
    """A DER PKCS#10 request for ``key``'s public key, self-signed through the key manager.

    ``cryptography`` puts the signing key's public key into a request, so the throwaway key's
    public key is swapped for ours before our key signs the request info.
    """
    template = builder.sign(await throwaway_key(key.key_type), _HASHES[key.hash_algorithm])
    info, algorithm, _ = split_signed(template.public_bytes(serialization.Encoding.DER))
    info = replace_csr_public_key(info, key.public_key.der)
    signature = await key.sign(info)
    return join_signed(info, algorithm, signature)


def ecdsa_der_to_raw(signature: bytes, key_type: KeyType) -> bytes:
    """Convert a DER ECDSA signature to the fixed-size R||S form JOSE uses."""
    r, s = decode_dss_signature(signature)
    size = (key_type.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


async def sign_jose(signing_input: bytes, key: ManagedKey) -> bytes:
    """The JWS signature of ``signing_input`` in its JOSE form (raw R||S for ECDSA)."""
    signature = await key.sign(signing_input)
    if key.key_type.is_ec:
        return ecdsa_der_to_raw(signature, key.key_type)
    return signature


def public_key_type(public_key: Any) -> KeyType:
    """The key type of a ``cryptography`` public key, or ValueError for an unsupported one."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return KeyType.EC_P256
        if isinstance(public_key.curve, ec.SECP384R1):
            return KeyType.EC_P384
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size in (2048, 4096):
        return KeyType.RSA_2048 if public_key.key_size == 2048 else KeyType.RSA_4096
    raise ValueError("unsupported public key: use EC P-256, EC P-384, RSA 2048 or RSA 4096")
