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

__all__ = ["TokenIssuer"]

import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyspire_sdk.jwk import public_key_to_jwk
from pyspire_sdk.jwt import SigningKey, sign_jwt

_CURVES: dict[str, type[ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}


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
        return sign_jwt(
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
