"""JWT-SVIDs: compact JWS with only ``alg``, ``kid`` and ``typ`` in the header (JWT-SVID §2)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pyspire.ca.authorities import JwtKey
from pyspire.ca.signing import sign_jose
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.jwk import b64url_encode
from pyspire_sdk.spiffeid import SpiffeId


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode()


async def mint_jwt_svid(
    key: JwtKey,
    *,
    spiffe_id: SpiffeId,
    audience: Sequence[str],
    ttl: timedelta,
    now: datetime,
    issuer: str = "",
    extra_claims: Mapping[str, Any] | None = None,
) -> tuple[str, datetime]:
    """A signed JWT-SVID for ``spiffe_id`` and every audience given; returns (token, expiry).

    ``exp`` is capped at the signing key's expiry, and ``iat`` is whole seconds (clients reject
    an ``iat`` in the future, so it is never rounded up).
    """
    if not audience or any(not item for item in audience):
        raise InvalidArgumentError("audience must be specified")
    issued_at = int(now.timestamp())
    expires_at = min(int((now + ttl).timestamp()), int(key.not_after.timestamp()))
    if expires_at <= issued_at:
        raise InvalidArgumentError("the JWT signing key expires before the token would be valid")
    header = {"alg": key.key.key_type.signature_algorithm, "kid": key.kid, "typ": "JWT"}
    claims: dict[str, Any] = dict(extra_claims or {})
    claims.update(
        {"sub": str(spiffe_id), "aud": list(audience), "exp": expires_at, "iat": issued_at}
    )
    if issuer:
        claims["iss"] = issuer
    signing_input = f"{b64url_encode(_json(header))}.{b64url_encode(_json(claims))}".encode("ascii")
    signature = await sign_jose(signing_input, key.key)
    token = signing_input.decode("ascii") + "." + b64url_encode(signature)
    return token, datetime.fromtimestamp(expires_at, tz=now.tzinfo)
