"""A token issuer for tests: signs JWTs and publishes its keys as a JWK Set.

It stands in for an identity provider (Google's, Microsoft's, a Kubernetes API server's) whose
tokens a plugin verifies::

    issuer = TokenIssuer()
    token = issuer.issue({"aud": "spire", "exp": ..., "sub": "node"})
    document = issuer.jwks()          # what the provider serves as its JWK Set

Keys are RSA-2048 (RS256) by default; ``algorithm`` picks another (ES256, PS256, EdDSA, ...).
``rotate`` starts signing with a new key, keeping the old one in the set, as providers do.
"""

from __future__ import annotations

__all__ = ["TokenIssuer", "encode_jwt"]

import json
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pyspire_sdk.jwk import b64url_encode, public_key_to_jwk

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, type[ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_EC_SIZES = {"ES256": 32, "ES384": 48, "ES512": 66}


def _segment(value: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def encode_jwt(
    header: Mapping[str, Any], claims: Mapping[str, Any], key: SigningKey, algorithm: str
) -> str:
    """The compact JWS of ``claims`` under ``header`` (``alg`` is set to ``algorithm``),
    signed with ``key``."""
    signing_input = f"{_segment({**header, 'alg': algorithm})}.{_segment(claims)}".encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    elif isinstance(key, rsa.RSAPrivateKey):
        digest = _HASHES[algorithm[2:]]()
        scheme: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if algorithm.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        )
        signature = key.sign(signing_input, scheme, digest)
    else:
        size = _EC_SIZES[algorithm]
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(_HASHES[algorithm[2:]]())))
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return f"{signing_input.decode()}.{b64url_encode(signature)}"


def _new_key(algorithm: str) -> SigningKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm]())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class TokenIssuer:
    """Signs tokens with its current key; :meth:`jwks` publishes every key it has used."""

    def __init__(self, algorithm: str = "RS256") -> None:
        self.algorithm = algorithm
        self.keys: dict[str, SigningKey] = {}
        self.key_id = ""
        self.rotate()

    def rotate(self) -> str:
        """Sign with a fresh key from now on; returns its key ID."""
        self.key_id = secrets.token_hex(8)
        self.keys[self.key_id] = _new_key(self.algorithm)
        return self.key_id

    @property
    def key(self) -> SigningKey:
        """The current signing key."""
        return self.keys[self.key_id]

    def issue(
        self,
        claims: Mapping[str, Any],
        *,
        key_id: str | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """A token of ``claims`` signed with the current key, ``kid`` in its header (or
        ``key_id``, which need not be a key of this issuer)."""
        return encode_jwt(
            {"typ": "JWT", "kid": key_id or self.key_id, **(header or {})},
            claims,
            self.key,
            self.algorithm,
        )

    def jwks(self) -> dict[str, Any]:
        """The JWK Set document of every key, each with ``kid``, ``use: sig`` and ``alg``."""
        return {
            "keys": [
                {**public_key_to_jwk(key.public_key(), kid=kid, use="sig"), "alg": self.algorithm}
                for kid, key in self.keys.items()
            ]
        }
