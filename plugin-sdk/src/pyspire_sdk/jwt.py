"""JSON Web Tokens (RFC 7519) signed with JWS (RFC 7515), verified against a JWK Set.

The checks run in a fixed order, so a token is parsed no further than needed to refuse it and
no key is looked up for an algorithm that is not allowed:

1. compact serialization, at most ``max_bytes``, three base64url parts of JSON objects whose
   members are each named once (parsers disagree on which of two duplicates wins);
2. the header: ``alg`` on the caller's allow-list (``none`` and HMAC are never supported),
   no ``crit`` (no extension is understood here), only the members the caller allows, and a
   ``typ``, when present, among the types the caller allows;
3. the key: the header's ``kid`` must name a key of the set whose type fits ``alg``;
4. the signature, with :mod:`cryptography` (RSA keys of at least :data:`MIN_RSA_KEY_BITS`);
5. the claims (:class:`ClaimRules`): ``exp`` (required unless said otherwise), ``nbf`` and
   ``iat`` against the caller's clock with a leeway for skew, then ``iss`` and ``aud``.

Every refusal raises a subclass of :class:`InvalidJwtError` (an
:class:`~pyspire_sdk.errors.InvalidArgumentError`) whose message says which rule broke: a
token that cannot be parsed is a :class:`MalformedJwtError`; a well-formed token that does not
hold is one of the others, so a node attestor can answer the first with InvalidArgument and the
rest with PermissionDenied. The token itself never appears in a message, since callers log
them. These are plain functions, with no I/O and no clock of their own: the caller passes the
keys (see :mod:`pyspire_sdk.jwks` for fetching them) and the time.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_LEEWAY",
    "MAX_TOKEN_BYTES",
    "MIN_RSA_KEY_BITS",
    "SUPPORTED_ALGORITHMS",
    "ClaimRules",
    "InvalidJwtError",
    "JwtClaimsError",
    "JwtSignatureError",
    "MalformedJwtError",
    "ParsedJwt",
    "SigningKey",
    "UnknownKeyError",
    "check_claims",
    "parse_jwt",
    "sign_jwt",
    "verify_jwt",
    "verify_signature",
]

import binascii
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.jwk import JwkSet, PublicKey, b64url_decode, b64url_encode

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
"""The private keys :func:`sign_jwt` signs with."""

_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_CURVES: dict[str, tuple[str, int]] = {
    "ES256": ("secp256r1", 32),
    "ES384": ("secp384r1", 48),
    "ES512": ("secp521r1", 66),
}

SUPPORTED_ALGORITHMS = frozenset(
    {f"{family}{size}" for family in ("RS", "PS", "ES") for size in _HASHES} | {"EdDSA"}
)
"""Every ``alg`` this module can verify; callers allow a subset."""

MIN_RSA_KEY_BITS = 2048
"""RSA keys shorter than this are refused, whatever signed with them."""

MAX_TOKEN_BYTES = 16 * 1024
"""The default bound on a token's length."""

DEFAULT_LEEWAY = timedelta(seconds=60)
"""How far apart the issuer's and the verifier's clocks may be, by default."""

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class InvalidJwtError(InvalidArgumentError):
    """A token was refused; the message says which rule it broke."""


class MalformedJwtError(InvalidJwtError):
    """The token is not a well-formed JWS compact serialization of a JWT."""


class UnknownKeyError(InvalidJwtError):
    """The token names no key ID, or one the key set does not have (for its algorithm)."""


class JwtSignatureError(InvalidJwtError):
    """The signature does not verify with the token's key."""


class JwtClaimsError(InvalidJwtError):
    """A claim does not hold: expired, not yet valid, another issuer or audience, ..."""


@dataclass(frozen=True)
class ParsedJwt:
    """A token split and decoded, its header checked; not yet verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    algorithm: str
    key_id: str | None
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)


@dataclass(frozen=True)
class ClaimRules:
    """What the claims of an accepted token must say.

    ``audiences``: the token's ``aud`` (a string or an array) must contain at least one of
    them; ``None`` leaves ``aud`` unchecked. ``issuers``: ``iss`` must be one of them; ``None``
    leaves it unchecked. ``leeway`` is how far in the future ``nbf`` and ``iat`` may be, and
    how long after ``exp`` the token is still accepted unless ``expiry_leeway`` says otherwise.
    """

    audiences: Collection[str] | None = None
    issuers: Collection[str] | None = None
    leeway: timedelta = DEFAULT_LEEWAY
    expiry_leeway: timedelta | None = None
    require_expiry: bool = True

    def __post_init__(self) -> None:
        if self.leeway < timedelta(0) or (
            self.expiry_leeway is not None and self.expiry_leeway < timedelta(0)
        ):
            raise ValueError("leeway must not be negative")
        if self.audiences is not None and not self.audiences:
            raise ValueError("audiences must name at least one audience, or be None")


def parse_jwt(
    token: str | bytes,
    *,
    algorithms: Collection[str],
    header_fields: Collection[str] | None = None,
    types: Collection[str] | None = None,
    max_bytes: int = MAX_TOKEN_BYTES,
) -> ParsedJwt:
    """Split and decode ``token`` and check its header (steps 1 and 2 above).

    ``algorithms`` is the allow-list of ``alg`` values (each in :data:`SUPPORTED_ALGORITHMS`:
    asking for another raises :class:`ValueError`); ``header_fields``, when given, are the
    only header members allowed; ``types``, when given, the values ``typ`` may have when it
    is present (a JWT-SVID's are ``JWT`` and ``JOSE``).
    """
    unsupported = set(algorithms) - SUPPORTED_ALGORITHMS
    if unsupported:
        raise ValueError(f"algorithms not supported: {', '.join(sorted(unsupported))}")
    text = _text(token, max_bytes)
    parts = text.split(".")
    if len(parts) != 3:
        raise MalformedJwtError(
            f"token is not a JWS compact serialization: expected 3 parts, found {len(parts)}"
        )
    for name, part in zip(("header", "claims", "signature"), parts, strict=True):
        if _SEGMENT.fullmatch(part) is None:
            raise MalformedJwtError(f"token {name} is not non-empty base64url")
    header = _json_object(parts[0], "header")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or not algorithm:
        raise MalformedJwtError("token header has no algorithm")
    if algorithm not in algorithms:
        raise JwtSignatureError(f'token signature algorithm "{algorithm}" is not allowed')
    if "crit" in header:
        raise MalformedJwtError("token header has critical extensions ('crit'), none is supported")
    if header_fields is not None:
        extra = sorted(set(header) - set(header_fields))
        if extra:
            raise MalformedJwtError("token header has members not allowed: " + ", ".join(extra))
    if types is not None and "typ" in header and header["typ"] not in types:
        raise MalformedJwtError(
            "token header type must be " + " or ".join(f'"{kind}"' for kind in sorted(types))
        )
    key_id = header.get("kid")
    if key_id is not None and not isinstance(key_id, str):
        raise MalformedJwtError("token header key id must be a string")
    claims = _json_object(parts[1], "claims")
    signature = _decode(parts[2], "signature")
    return ParsedJwt(
        header=header,
        claims=claims,
        algorithm=algorithm,
        key_id=key_id or None,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=signature,
    )


def verify_signature(parsed: ParsedJwt, key: PublicKey) -> None:
    """Raise :class:`JwtSignatureError` unless ``parsed`` is signed by ``key`` (its algorithm
    must fit the key: RSA for RS/PS, EC on the matching curve for ES, Ed25519 for EdDSA)."""
    algorithm = parsed.algorithm
    try:
        if algorithm == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise JwtSignatureError('token algorithm "EdDSA" needs an Ed25519 key')
            key.verify(parsed.signature, parsed.signing_input)
            return
        family, size = algorithm[:2], algorithm[2:]
        digest = _HASHES[size]()
        if family in ("RS", "PS"):
            if not isinstance(key, rsa.RSAPublicKey):
                raise JwtSignatureError(f'token algorithm "{algorithm}" needs an RSA key')
            if key.key_size < MIN_RSA_KEY_BITS:
                raise JwtSignatureError(
                    f"token key is RSA-{key.key_size}, shorter than {MIN_RSA_KEY_BITS} bits"
                )
            scheme: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if family == "RS"
                else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            )
            key.verify(parsed.signature, parsed.signing_input, scheme, digest)
            return
        curve, length = _EC_CURVES[algorithm]
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
            raise JwtSignatureError(f'token algorithm "{algorithm}" needs an EC key on {curve}')
        if len(parsed.signature) != 2 * length:
            raise JwtSignatureError(
                f"token signature is {len(parsed.signature)} bytes, {algorithm} needs {2 * length}"
            )
        r = int.from_bytes(parsed.signature[:length], "big")
        s = int.from_bytes(parsed.signature[length:], "big")
        key.verify(encode_dss_signature(r, s), parsed.signing_input, ec.ECDSA(digest))
    except InvalidSignature:
        raise JwtSignatureError("token signature is not valid") from None


def check_claims(claims: Mapping[str, Any], rules: ClaimRules, now: datetime) -> None:
    """Raise :class:`JwtClaimsError` unless ``claims`` hold under ``rules`` at ``now``."""
    current = now.timestamp()
    leeway = rules.leeway.total_seconds()
    expiry_leeway = (
        rules.expiry_leeway if rules.expiry_leeway is not None else rules.leeway
    ).total_seconds()
    expires = _numeric_date(claims, "exp")
    if expires is None:
        if rules.require_expiry:
            raise JwtClaimsError("token has no expiry claim ('exp')")
    elif current >= expires + expiry_leeway:
        raise JwtClaimsError("token has expired")
    not_before = _numeric_date(claims, "nbf")
    if not_before is not None and not_before > current + leeway:
        raise JwtClaimsError("token is not valid yet ('nbf' is in the future)")
    issued = _numeric_date(claims, "iat")
    if issued is not None and issued > current + leeway:
        raise JwtClaimsError("token was issued in the future ('iat')")
    if rules.issuers is not None:
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer not in rules.issuers:
            shown = json.dumps(issuer) if isinstance(issuer, str) else "none"
            raise JwtClaimsError(
                f"token issuer {shown} is not one of {json.dumps(sorted(rules.issuers))}"
            )
    if rules.audiences is not None:
        audiences = _audiences(claims)
        if not set(audiences) & set(rules.audiences):
            raise JwtClaimsError(
                f"token audience {json.dumps(audiences)} has none of "
                f"{json.dumps(sorted(rules.audiences))}"
            )


def verify_jwt(
    token: str | bytes,
    keys: JwkSet,
    *,
    algorithms: Collection[str],
    rules: ClaimRules,
    now: datetime,
    header_fields: Collection[str] | None = None,
    types: Collection[str] | None = None,
    max_bytes: int = MAX_TOKEN_BYTES,
) -> ParsedJwt:
    """Every step above: the token, verified with the key its ``kid`` names in ``keys`` and
    its claims checked at ``now``. Raises a subclass of :class:`InvalidJwtError`."""
    parsed = parse_jwt(
        token, algorithms=algorithms, header_fields=header_fields, types=types, max_bytes=max_bytes
    )
    if parsed.key_id is None:
        raise UnknownKeyError("token header has no key id ('kid')")
    candidates = keys.find(parsed.key_id)
    if not candidates:
        raise UnknownKeyError(f'token key id "{parsed.key_id}" is not in the key set')
    failure: JwtSignatureError | None = None
    for key in candidates:
        try:
            verify_signature(parsed, key)
        except JwtSignatureError as error:
            failure = failure or error
            continue
        check_claims(parsed.claims, rules, now)
        return parsed
    assert failure is not None
    raise failure


def _segment(value: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def sign_jwt(
    header: Mapping[str, Any], claims: Mapping[str, Any], key: SigningKey, algorithm: str
) -> str:
    """The compact JWS of ``claims`` under ``header`` (its ``alg`` set to ``algorithm``),
    signed with ``key``: an assertion a plugin presents to a token endpoint, say. The
    algorithm must fit the key as :func:`verify_signature` expects."""
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"algorithm {algorithm!r} is not supported")
    signing_input = f"{_segment({**header, 'alg': algorithm})}.{_segment(claims)}".encode()
    if algorithm == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("EdDSA needs an Ed25519 key")
        signature = key.sign(signing_input)
    elif algorithm[:2] in ("RS", "PS"):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{algorithm} needs an RSA key")
        digest = _HASHES[algorithm[2:]]()
        scheme: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if algorithm.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        )
        signature = key.sign(signing_input, scheme, digest)
    else:
        curve, size = _EC_CURVES[algorithm]
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != curve:
            raise ValueError(f"{algorithm} needs an EC key on {curve}")
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(_HASHES[algorithm[2:]]())))
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return f"{signing_input.decode()}.{b64url_encode(signature)}"


def _text(token: str | bytes, max_bytes: int) -> str:
    if len(token) > max_bytes:
        raise MalformedJwtError(f"token is longer than {max_bytes} bytes")
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedJwtError("token is not ASCII text") from None
    if not token:
        raise MalformedJwtError("token is empty")
    if len(token.encode("utf-8")) > max_bytes:
        raise MalformedJwtError(f"token is longer than {max_bytes} bytes")
    return token


def _decode(segment: str, name: str) -> bytes:
    try:
        return b64url_decode(segment, member=name)
    except (InvalidArgumentError, binascii.Error):
        raise MalformedJwtError(f"token {name} is not base64url without padding") from None


class _DuplicateMemberError(Exception):
    def __init__(self, member: str) -> None:
        super().__init__(member)
        self.member = member


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise _DuplicateMemberError(name)
        found[name] = value
    return found


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(segment: str, name: str) -> dict[str, Any]:
    raw = _decode(segment, name)
    try:
        value = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_members)
    except _DuplicateMemberError as error:
        raise MalformedJwtError(f"token {name} has the member {error.member!r} twice") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedJwtError(f"token {name} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedJwtError(f"token {name} is not a JSON object")
    return value


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JwtClaimsError(f"token claim {name!r} must be a number of seconds")
    return float(value)


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    value = claims.get("aud")
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(i, str) and i for i in value):
        return list(value)
    raise JwtClaimsError("token has no audience claim ('aud')")
