"""JWT-SVID validation, as the Workload API's ValidateJWTSVID performs it.

A token is accepted only when every rule of the JWT-SVID standard holds: JWS compact
serialization; a protected header with nothing but ``alg``, ``kid`` and ``typ``; ``alg`` on the
allow-list (RSA PKCS#1 v1.5, RSA-PSS and ECDSA with SHA-256/384/512, never ``none``, HMAC or
EdDSA); ``typ``, when present, ``JWT`` or ``JOSE``; a ``kid`` naming a JWT authority in the
bundle of the trust domain of the ``sub`` claim; a signature that verifies with that key; an
``exp`` in the future; and an ``aud`` that contains the expected audience.

The checks run in that order, so a token is never parsed further than needed to reject it and
no key is looked up for an algorithm that is not allowed. Every failure raises
:class:`~pyspire_sdk.errors.InvalidArgumentError` whose message says which rule broke; the
token itself never appears in a message, since a caller may log it.

These are plain functions (no I/O, no clock of their own): the caller passes the bundles and
the time.
"""

from __future__ import annotations

__all__ = [
    "ALLOWED_ALGORITHMS",
    "ALLOWED_HEADER_FIELDS",
    "CLOCK_SKEW",
    "ValidatedJwtSvid",
    "filter_foreign_claims",
    "validate_jwt_svid",
]

import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.jwk import b64url_decode
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

ALLOWED_HEADER_FIELDS = frozenset({"alg", "kid", "typ"})
"""The only members a JWT-SVID's protected header may have."""

_HASH_BY_SIZE: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_CURVE_BY_ALG: dict[str, tuple[str, int]] = {
    "ES256": ("secp256r1", 32),
    "ES384": ("secp384r1", 48),
    "ES512": ("secp521r1", 66),
}

ALLOWED_ALGORITHMS = frozenset(
    f"{family}{size}" for family in ("RS", "PS", "ES") for size in _HASH_BY_SIZE
)
"""The signature algorithms a JWT-SVID may use; everything else is rejected before any key is
looked up."""

_ALLOWED_TYPES = frozenset({"JWT", "JOSE"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")

CLOCK_SKEW = timedelta(seconds=60)
"""How far in the future ``nbf`` and ``iat`` may be (clocks of issuer and validator differ).
``exp`` gets no leeway: a token is expired at its ``exp``."""

_FOREIGN_CLAIMS = frozenset({"sub", "aud", "exp"})


@dataclass(frozen=True)
class ValidatedJwtSvid:
    """A JWT-SVID that passed validation: its subject and all of its claims."""

    spiffe_id: SpiffeId
    claims: Mapping[str, Any]


def validate_jwt_svid(
    token: str,
    audience: str,
    bundles: Mapping[TrustDomain, Bundle],
    now: datetime,
) -> ValidatedJwtSvid:
    """Validate ``token`` for ``audience`` against the JWT authorities in ``bundles``.

    ``bundles`` maps each trusted trust domain to its bundle; a token whose subject is in a
    trust domain without a bundle there is not trusted. Raises
    :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the broken rule.
    """
    if not audience:
        raise InvalidArgumentError("audience must be specified")
    parts = _split(token)
    header = _json_segment(parts[0], "header")
    algorithm, key_id = _check_header(header)
    claims = _json_segment(parts[1], "claims")
    subject = _subject(claims)
    signature = _signature(parts[2])

    bundle = bundles.get(subject.trust_domain)
    if bundle is None:
        raise InvalidArgumentError(f'no keys found for trust domain "{subject.trust_domain.name}"')
    public_key = _authority_key(bundle, key_id)
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    _verify(algorithm, public_key, signing_input, signature)

    _check_times(claims, now)
    _check_audience(claims, audience)
    return ValidatedJwtSvid(spiffe_id=subject, claims=claims)


def filter_foreign_claims(
    claims: Mapping[str, Any], allowed: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The claims of a token from a foreign trust domain that may be shown to a workload:
    ``sub``, ``aud``, ``exp`` and the names in ``allowed``; others may carry meaning only its
    issuer defines."""
    return {
        name: value for name, value in claims.items() if name in _FOREIGN_CLAIMS or name in allowed
    }


def _split(token: str) -> tuple[str, str, str]:
    if not token:
        raise InvalidArgumentError("svid must be specified")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidArgumentError(
            "unable to parse JWT token: expected JWS compact serialization with 3 parts, "
            f"found {len(parts)}"
        )
    for name, part in zip(("header", "claims", "signature"), parts, strict=True):
        if _SEGMENT.fullmatch(part) is None:
            raise InvalidArgumentError(
                f"unable to parse JWT token: the {name} is not non-empty base64url"
            )
    return parts[0], parts[1], parts[2]


def _decode(segment: str, name: str) -> bytes:
    try:
        return b64url_decode(segment, member=name)
    except (InvalidArgumentError, binascii.Error):
        raise InvalidArgumentError(
            f"unable to parse JWT token: the {name} is not base64url without padding"
        ) from None


def _json_segment(segment: str, name: str) -> dict[str, Any]:
    raw = _decode(segment, name)
    try:
        value = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_members)
    except _DuplicateMemberError as error:
        raise InvalidArgumentError(
            f"unable to parse JWT token: the {name} has the member {error.member!r} twice"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgumentError(f"unable to parse JWT token: the {name} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"unable to parse JWT token: the {name} is not a JSON object")
    return value


class _DuplicateMemberError(Exception):
    def __init__(self, member: str) -> None:
        super().__init__(member)
        self.member = member


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose members are named once: parsers disagree on which of two
    duplicates wins, so a token relying on either is refused."""
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise _DuplicateMemberError(name)
        found[name] = value
    return found


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_header(header: Mapping[str, Any]) -> tuple[str, str]:
    extra = sorted(set(header) - ALLOWED_HEADER_FIELDS)
    if extra:
        raise InvalidArgumentError(
            "token header has fields a JWT-SVID must not have: " + ", ".join(extra)
        )
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or not algorithm:
        raise InvalidArgumentError("token header missing algorithm")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise InvalidArgumentError(f'unsupported token signature algorithm "{algorithm}"')
    if "typ" in header and header["typ"] not in _ALLOWED_TYPES:
        raise InvalidArgumentError('token header type must be "JWT" or "JOSE"')
    key_id = header.get("kid")
    if key_id is None or key_id == "":
        raise InvalidArgumentError("token header missing key id")
    if not isinstance(key_id, str):
        raise InvalidArgumentError("token header key id must be a string")
    return algorithm, key_id


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidArgumentError("token is missing the subject claim")
    try:
        return SpiffeId.parse(subject)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"token has an invalid subject claim: {error}") from None


def _signature(segment: str) -> bytes:
    return _decode(segment, "signature")


def _authority_key(bundle: Bundle, key_id: str) -> Any:
    for authority in bundle.jwt_authorities:
        if authority.key_id == key_id:
            try:
                return serialization.load_der_public_key(authority.public_key)
            except (ValueError, UnsupportedAlgorithm):
                raise InvalidArgumentError(
                    f'key "{key_id}" of trust domain "{bundle.trust_domain.name}" is not a '
                    "valid public key"
                ) from None
    raise InvalidArgumentError(
        f'key "{key_id}" not found in trust domain "{bundle.trust_domain.name}"'
    )


def _verify(algorithm: str, public_key: Any, signing_input: bytes, signature: bytes) -> None:
    family, size = algorithm[:2], algorithm[2:]
    digest = _HASH_BY_SIZE[size]()
    try:
        if family in ("RS", "PS"):
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise InvalidArgumentError(
                    f'token algorithm "{algorithm}" needs an RSA key, the bundle has another type'
                )
            scheme: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if family == "RS"
                else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            )
            public_key.verify(signature, signing_input, scheme, digest)
            return
        curve, length = _EC_CURVE_BY_ALG[algorithm]
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != curve:
            raise InvalidArgumentError(
                f'token algorithm "{algorithm}" needs an EC key on {curve}, the bundle has '
                "another type"
            )
        if len(signature) != 2 * length:
            raise InvalidArgumentError(
                f"token signature is {len(signature)} bytes, {algorithm} needs {2 * length}"
            )
        r = int.from_bytes(signature[:length], "big")
        s = int.from_bytes(signature[length:], "big")
        public_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
    except InvalidSignature:
        raise InvalidArgumentError("token signature is not valid") from None


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"token claim {name!r} must be a number of seconds")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: datetime) -> None:
    current = now.timestamp()
    expires = _numeric_date(claims, "exp")
    if expires is None:
        raise InvalidArgumentError("token is missing the expiry claim")
    if current >= expires:
        raise InvalidArgumentError("token has expired")
    latest = current + CLOCK_SKEW.total_seconds()
    not_before = _numeric_date(claims, "nbf")
    if not_before is not None and not_before > latest:
        raise InvalidArgumentError("token is not valid yet")
    issued = _numeric_date(claims, "iat")
    if issued is not None and issued > latest:
        raise InvalidArgumentError("token was issued in the future")


def _check_audience(claims: Mapping[str, Any], audience: str) -> None:
    value = claims.get("aud")
    audiences: list[str]
    if isinstance(value, str):
        audiences = [value]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        audiences = value
    else:
        raise InvalidArgumentError("token is missing the audience claim")
    if not audiences or not all(audiences):
        raise InvalidArgumentError("token is missing the audience claim")
    if audience not in audiences:
        raise InvalidArgumentError(
            f"expected audience in {json.dumps([audience])} (audience={json.dumps(audiences)})"
        )
