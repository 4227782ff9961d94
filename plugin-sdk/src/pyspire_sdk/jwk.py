"""JSON Web Keys (RFC 7517/7518) for the public keys that SPIFFE bundles carry.

Supported: EC keys on P-256, P-384 and P-521, RSA keys and Ed25519 (``OKP``) keys. Output is
what strict consumers (go-jose, go-spiffe, pyjwt) accept: base64url without padding, EC
coordinates at the curve's full length (32, 48 or 66 bytes, leading zeros kept) and RSA
integers in their shortest big-endian form. Parsing is as strict on what matters for safety
(the curve is known, the point is on it, the lengths are exact) and raises
:class:`~pyspire_sdk.errors.InvalidArgumentError` naming the member and the reason.
"""

from __future__ import annotations

__all__ = [
    "JwkSet",
    "PublicKey",
    "b64url_decode",
    "b64url_encode",
    "jwk_thumbprint",
    "jwk_to_spki",
    "parse_jwk_set",
    "public_key_from_jwk",
    "public_key_to_jwk",
    "spki_to_jwk",
]

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyspire_sdk.errors import InvalidArgumentError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
"""The public key types a JWK here can hold."""

_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
_CURVE_NAMES = {curve().name: name for name, (curve, _) in _CURVES.items()}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as JOSE writes binary members."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, member: str = "value") -> bytes:
    """Decode base64url without padding; ``member`` names the JWK member in the error."""
    if not isinstance(text, str):
        raise InvalidArgumentError(
            f"jwk member {member!r} must be a base64url string, found {type(text).__name__}"
        )
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise InvalidArgumentError(f"jwk member {member!r} is not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def public_key_to_jwk(
    key: PublicKey, *, kid: str | None = None, use: str | None = None
) -> dict[str, Any]:
    """The JWK of ``key``, with ``kid`` and ``use`` when given (and non-empty).

    Raises :class:`InvalidArgumentError` for a key type or curve JWKs here cannot express.
    """
    jwk: dict[str, Any]
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = _CURVE_NAMES.get(key.curve.name)
        if name is None:
            raise InvalidArgumentError(f"jwk cannot express the EC curve {key.curve.name!r}")
        size = _CURVES[name][1]
        numbers = key.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": name,
            "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big")),
        }
    elif isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        jwk = {
            "kty": "RSA",
            "n": b64url_encode(_uint_bytes(rsa_numbers.n)),
            "e": b64url_encode(_uint_bytes(rsa_numbers.e)),
        }
    elif isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    else:
        raise InvalidArgumentError(f"jwk cannot express a public key of type {type(key).__name__}")
    if kid:
        jwk["kid"] = kid
    if use:
        jwk["use"] = use
    return jwk


def _member(jwk: Mapping[str, Any], name: str) -> str:
    value = jwk.get(name)
    if value is None:
        raise InvalidArgumentError(f"jwk member {name!r} is missing")
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"jwk member {name!r} must be a string, found {type(value).__name__}"
        )
    return value


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """The public key a JWK describes.

    Raises :class:`InvalidArgumentError` when ``kty`` or ``crv`` is unknown, a member is
    missing or malformed, an EC coordinate is not the curve's full length, or the point is not
    on the curve.
    """
    if not isinstance(jwk, Mapping):
        raise InvalidArgumentError(f"jwk must be a JSON object, found {type(jwk).__name__}")
    kty = _member(jwk, "kty")
    if kty == "EC":
        crv = _member(jwk, "crv")
        if crv not in _CURVES:
            raise InvalidArgumentError(
                f"jwk member 'crv' {crv!r} is not supported: use one of "
                + ", ".join(repr(name) for name in _CURVES)
            )
        curve, size = _CURVES[crv]
        coordinates = []
        for name in ("x", "y"):
            raw = b64url_decode(_member(jwk, name), member=name)
            if len(raw) != size:
                raise InvalidArgumentError(
                    f"jwk member {name!r} is {len(raw)} bytes, expected {size} for {crv}"
                )
            coordinates.append(int.from_bytes(raw, "big"))
        try:
            return ec.EllipticCurvePublicNumbers(
                coordinates[0], coordinates[1], curve()
            ).public_key()
        except ValueError:
            raise InvalidArgumentError(f"jwk point (x, y) is not on the curve {crv}") from None
    if kty == "RSA":
        n = int.from_bytes(b64url_decode(_member(jwk, "n"), member="n"), "big")
        e = int.from_bytes(b64url_decode(_member(jwk, "e"), member="e"), "big")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except (ValueError, UnsupportedAlgorithm) as error:
            raise InvalidArgumentError(f"jwk RSA key is invalid: {error}") from None
    if kty == "OKP":
        crv = _member(jwk, "crv")
        if crv != "Ed25519":
            raise InvalidArgumentError(
                f"jwk member 'crv' {crv!r} is not supported for OKP: use 'Ed25519'"
            )
        raw = b64url_decode(_member(jwk, "x"), member="x")
        if len(raw) != 32:
            raise InvalidArgumentError(
                f"jwk member 'x' is {len(raw)} bytes, expected 32 for Ed25519"
            )
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    raise InvalidArgumentError(
        f"jwk member 'kty' {kty!r} is not supported: use 'EC', 'RSA' or 'OKP'"
    )


def spki_to_jwk(
    spki_der: bytes, *, kid: str | None = None, use: str | None = None
) -> dict[str, Any]:
    """The JWK of a SubjectPublicKeyInfo (DER) public key, with ``kid``/``use`` when given."""
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidArgumentError("public key is not a valid SubjectPublicKeyInfo (DER)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise InvalidArgumentError(f"jwk cannot express a public key of type {type(key).__name__}")
    return public_key_to_jwk(key, kid=kid, use=use)


def jwk_to_spki(jwk: Mapping[str, Any]) -> bytes:
    """The SubjectPublicKeyInfo (DER) of the public key a JWK describes."""
    return public_key_from_jwk(jwk).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def jwk_thumbprint(key: PublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of ``key``, base64url: a stable, content-derived key ID."""
    jwk = public_key_to_jwk(key)
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class JwkSet:
    """The usable keys of a JWK Set (RFC 7517 section 5), by key ID.

    A key ID may name several keys (a set in the middle of a rotation can); verifiers try each.
    ``skipped`` counts the set's members that were left out: keys for another use than
    signatures, of a type or curve not supported here, or malformed. A set that mixes in keys
    this module cannot use still verifies with the others, as go-jose's does.
    """

    keys: Mapping[str, Sequence[PublicKey]] = field(default_factory=dict)
    skipped: int = 0

    def find(self, key_id: str) -> Sequence[PublicKey]:
        """The keys with ``key_id``; empty when there is none."""
        return self.keys.get(key_id, ())

    def __len__(self) -> int:
        return sum(len(keys) for keys in self.keys.values())


def parse_jwk_set(document: Any) -> JwkSet:
    """The signature keys of a JWK Set document (``{"keys": [...]}``), by ``kid``.

    Keys without a ``kid`` cannot be chosen by a token and are skipped, as are keys whose
    ``use`` is present and not ``"sig"`` and keys :func:`public_key_from_jwk` refuses. Raises
    :class:`InvalidArgumentError` when the document is not a JSON object with a ``keys`` array.
    """
    if not isinstance(document, Mapping):
        raise InvalidArgumentError(
            f"jwk set must be a JSON object, found {type(document).__name__}"
        )
    members = document.get("keys")
    if not isinstance(members, list):
        raise InvalidArgumentError("jwk set member 'keys' is missing or not an array")
    keys: dict[str, list[PublicKey]] = {}
    skipped = 0
    for member in members:
        if not isinstance(member, Mapping):
            skipped += 1
            continue
        key_id = member.get("kid")
        use = member.get("use")
        if not isinstance(key_id, str) or not key_id or use not in (None, "sig"):
            skipped += 1
            continue
        try:
            key = public_key_from_jwk(member)
        except InvalidArgumentError:
            skipped += 1
            continue
        keys.setdefault(key_id, []).append(key)
    return JwkSet(keys={kid: tuple(found) for kid, found in keys.items()}, skipped=skipped)
