"""JWT-SVIDs: the header holds only alg, kid and typ; signatures verify; expiry is capped."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pyspire.ca.authorities import JwtKey
from pyspire.ca.jwt import mint_jwt_svid
from pyspire.ca.signing import ManagedKey
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugins.key_manager import KeyType
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

WORKLOAD = SpiffeId.parse("spiffe://example.org/workload")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def jwt_key(
    key_manager: InProcessKeyManager, clock: FakeClock, key_type: KeyType, lifetime: timedelta
) -> JwtKey:
    public = await key_manager.generate_key("jwt", key_type)
    return JwtKey(
        kid="kid1",
        key=ManagedKey(key_manager, public),
        not_before=clock.now(),
        not_after=clock.now() + lifetime,
    )


@pytest.mark.parametrize(
    ("key_type", "alg"),
    [(KeyType.EC_P256, "ES256"), (KeyType.EC_P384, "ES384"), (KeyType.RSA_2048, "RS256")],
)
async def test_token_is_well_formed_and_verifies(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, key_type: KeyType, alg: str
) -> None:
    key = await jwt_key(key_manager, fake_clock, key_type, timedelta(hours=24))
    token, expires_at = await mint_jwt_svid(
        key,
        spiffe_id=WORKLOAD,
        audience=("a", "b"),
        ttl=timedelta(minutes=5),
        now=fake_clock.now(),
    )
    header_b64, claims_b64, signature_b64 = token.split(".")
    assert json.loads(unb64(header_b64)) == {"alg": alg, "kid": "kid1", "typ": "JWT"}
    claims = json.loads(unb64(claims_b64))
    now = int(fake_clock.now().timestamp())
    assert claims == {"sub": str(WORKLOAD), "aud": ["a", "b"], "exp": now + 300, "iat": now}
    assert int(expires_at.timestamp()) == now + 300

    public = serialization.load_der_public_key(key.key.public_key.der)
    signature = unb64(signature_b64)
    signed = f"{header_b64}.{claims_b64}".encode()
    if isinstance(public, ec.EllipticCurvePublicKey):
        half = len(signature) // 2
        assert half == (32 if key_type is KeyType.EC_P256 else 48)
        der = encode_dss_signature(
            int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        )
        digest = hashes.SHA256() if key_type is KeyType.EC_P256 else hashes.SHA384()
        public.verify(der, signed, ec.ECDSA(digest))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())


async def test_expiry_is_capped_at_the_key_expiry(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    key = await jwt_key(key_manager, fake_clock, KeyType.EC_P256, timedelta(minutes=2))
    token, expires_at = await mint_jwt_svid(
        key, spiffe_id=WORKLOAD, audience=("a",), ttl=timedelta(hours=1), now=fake_clock.now()
    )
    assert expires_at == key.not_after
    assert json.loads(unb64(token.split(".")[1]))["exp"] == int(key.not_after.timestamp())


@pytest.mark.parametrize("audience", [(), ("",), ("a", "")])
async def test_audience_is_required(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, audience: tuple[str, ...]
) -> None:
    key = await jwt_key(key_manager, fake_clock, KeyType.EC_P256, timedelta(hours=1))
    with pytest.raises(InvalidArgumentError, match="audience"):
        await mint_jwt_svid(
            key,
            spiffe_id=WORKLOAD,
            audience=audience,
            ttl=timedelta(minutes=5),
            now=fake_clock.now(),
        )


async def test_issuer_is_added_when_configured(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    key = await jwt_key(key_manager, fake_clock, KeyType.EC_P256, timedelta(hours=1))
    token, _ = await mint_jwt_svid(
        key,
        spiffe_id=WORKLOAD,
        audience=("a",),
        ttl=timedelta(minutes=5),
        now=fake_clock.now(),
        issuer="https://issuer.example.org",
    )
    assert json.loads(unb64(token.split(".")[1]))["iss"] == "https://issuer.example.org"
