"""JWT verification: every rule refuses what breaks it, with a message naming the rule."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from pyspire_sdk.jwk import JwkSet, parse_jwk_set, public_key_to_jwk
from pyspire_sdk.jwt import (
    ClaimRules,
    InvalidJwtError,
    JwtClaimsError,
    JwtSignatureError,
    MalformedJwtError,
    UnknownKeyError,
    check_claims,
    parse_jwt,
    sign_jwt,
    verify_jwt,
)
from pyspire_sdk.testing.tokens import TokenIssuer

NOW = datetime(2030, 1, 1, tzinfo=UTC)
RULES = ClaimRules(audiences=("spire",), issuers=("https://issuer",))


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "https://issuer",
        "aud": "spire",
        "sub": "node-1",
        "iat": NOW.timestamp() - 10,
        "nbf": NOW.timestamp() - 10,
        "exp": NOW.timestamp() + 600,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def verify(issuer: TokenIssuer, token: str, rules: ClaimRules = RULES, **options: Any) -> Any:
    return verify_jwt(
        token,
        parse_jwk_set(issuer.jwks()),
        algorithms=(issuer.algorithm,),
        rules=rules,
        now=NOW,
        **options,
    )


@pytest.mark.parametrize(
    "algorithm", ["RS256", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA"]
)
def test_a_good_token_verifies_with_every_supported_algorithm(algorithm: str) -> None:
    issuer = TokenIssuer(algorithm)
    parsed = verify(issuer, issuer.issue(claims()))
    assert parsed.claims["sub"] == "node-1"
    assert parsed.key_id == issuer.key_id
    assert parsed.algorithm == algorithm


def test_a_flipped_signature_bit_is_refused() -> None:
    issuer = TokenIssuer()
    head, body, signature = issuer.issue(claims()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(JwtSignatureError, match="signature is not valid"):
        verify(issuer, f"{head}.{body}.{forged}")


def test_changed_claims_under_the_old_signature_are_refused() -> None:
    issuer = TokenIssuer()
    head, _, signature = issuer.issue(claims()).split(".")
    other = base64.urlsafe_b64encode(json.dumps(claims(sub="node-2")).encode()).rstrip(b"=")
    with pytest.raises(JwtSignatureError):
        verify(issuer, f"{head}.{other.decode()}.{signature}")


def test_a_token_signed_by_another_key_with_a_known_kid_is_refused() -> None:
    issuer, impostor = TokenIssuer(), TokenIssuer()
    token = impostor.issue(claims(), key_id=issuer.key_id)
    with pytest.raises(JwtSignatureError):
        verify(issuer, token)


def test_an_unknown_key_id_is_refused() -> None:
    issuer = TokenIssuer()
    with pytest.raises(UnknownKeyError, match='key id "nope" is not in the key set'):
        verify(issuer, issuer.issue(claims(), key_id="nope"))


def test_a_token_without_key_id_is_refused() -> None:
    issuer = TokenIssuer()
    token = sign_jwt({"typ": "JWT"}, claims(), issuer.key, "RS256")
    with pytest.raises(UnknownKeyError, match="no key id"):
        verify(issuer, token)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exp": NOW.timestamp() - 61}, "expired"),
        ({"exp": None}, "no expiry"),
        ({"nbf": NOW.timestamp() + 61}, "not valid yet"),
        ({"iat": NOW.timestamp() + 61}, "issued in the future"),
        ({"aud": "other"}, 'audience \\["other"\\] has none of \\["spire"\\]'),
        ({"aud": ["a", "b"]}, "has none of"),
        ({"aud": None}, "no audience"),
        ({"aud": []}, "no audience"),
        ({"iss": "https://evil"}, 'issuer "https://evil" is not one of'),
        ({"exp": "tomorrow"}, "'exp' must be a number"),
        ({"exp": True}, "'exp' must be a number"),
    ],
)
def test_claims_that_do_not_hold_are_refused(changes: dict[str, Any], message: str) -> None:
    issuer = TokenIssuer()
    with pytest.raises(JwtClaimsError, match=message):
        verify(issuer, issuer.issue(claims(**changes)))


def test_the_leeway_covers_skew_within_it() -> None:
    issuer = TokenIssuer()
    token = issuer.issue(
        claims(exp=NOW.timestamp() - 59, nbf=NOW.timestamp() + 59, iat=NOW.timestamp() + 59)
    )
    verify(issuer, token)
    strict = ClaimRules(audiences=("spire",), expiry_leeway=timedelta(0))
    with pytest.raises(JwtClaimsError, match="expired"):
        verify(issuer, token, strict)


def test_any_of_several_audiences_is_enough() -> None:
    issuer = TokenIssuer()
    verify(issuer, issuer.issue(claims(aud=["x", "spire"])), ClaimRules(audiences=("y", "spire")))


def test_an_algorithm_off_the_allow_list_is_refused_before_any_key_is_used() -> None:
    issuer = TokenIssuer("ES256")
    with pytest.raises(JwtSignatureError, match='"ES256" is not allowed'):
        verify_jwt(
            issuer.issue(claims()),
            JwkSet(),
            algorithms=("RS256",),
            rules=RULES,
            now=NOW,
        )


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
def test_none_and_hmac_cannot_be_allowed(algorithm: str) -> None:
    with pytest.raises(ValueError, match="not supported"):
        parse_jwt("a.b.c", algorithms=(algorithm,))


def test_a_key_of_the_wrong_type_for_the_algorithm_is_refused() -> None:
    rsa_issuer, ec_issuer = TokenIssuer("RS256"), TokenIssuer("ES256")
    token = sign_jwt({"kid": ec_issuer.key_id}, claims(), ec_issuer.key, "ES256")
    keys = JwkSet(keys={ec_issuer.key_id: (rsa_issuer.key.public_key(),)})  # type: ignore[union-attr]
    with pytest.raises(JwtSignatureError, match="needs an EC key"):
        verify_jwt(token, keys, algorithms=("ES256",), rules=RULES, now=NOW)


def test_a_short_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    token = sign_jwt({"kid": "k"}, claims(), weak, "RS256")
    keys = parse_jwk_set({"keys": [public_key_to_jwk(weak.public_key(), kid="k")]})
    with pytest.raises(JwtSignatureError, match="shorter than 2048"):
        verify_jwt(token, keys, algorithms=("RS256",), rules=RULES, now=NOW)


def test_crit_and_unlisted_header_members_are_refused() -> None:
    issuer = TokenIssuer()
    with pytest.raises(MalformedJwtError, match="crit"):
        verify(issuer, issuer.issue(claims(), header={"crit": ["exp"]}))
    with pytest.raises(MalformedJwtError, match="not allowed: x5t"):
        verify(
            issuer,
            issuer.issue(claims(), header={"x5t": "abc"}),
            header_fields={"alg", "kid", "typ"},
        )


def _raw(header: bytes, body: bytes) -> str:
    encode = lambda part: base64.urlsafe_b64encode(part).rstrip(b"=").decode()  # noqa: E731
    return f"{encode(header)}.{encode(body)}.c2ln"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "empty"),
        ("a.b", "expected 3 parts, found 2"),
        ("a.b.c.d", "found 4"),
        ("a..c", "claims is not non-empty base64url"),
        ("a!.b.c", "header is not non-empty base64url"),
        (_raw(b"[1]", b"{}"), "header is not a JSON object"),
        (_raw(b"{", b"{}"), "header is not JSON"),
        (_raw(b'{"alg":"RS256"}', b'{"a":1,"a":2}'), "member 'a' twice"),
        (_raw(b'{"alg":"RS256"}', b'{"exp":NaN}'), "claims is not JSON"),
        (_raw(b'{"kid":"k"}', b"{}"), "no algorithm"),
        (_raw(b'{"alg":"RS256","kid":7}', b"{}"), "key id must be a string"),
        ("x" * 20_000, "longer than"),
    ],
)
def test_malformed_tokens_are_refused_as_malformed(token: str, message: str) -> None:
    with pytest.raises(MalformedJwtError, match=message):
        parse_jwt(token, algorithms=("RS256",))


def test_refusals_never_quote_the_token() -> None:
    issuer = TokenIssuer()
    token = issuer.issue(claims(exp=NOW.timestamp() - 3600))
    with pytest.raises(InvalidJwtError) as caught:
        verify(issuer, token)
    assert token not in str(caught.value)
    assert token.split(".")[1] not in str(caught.value)


def test_claim_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="leeway"):
        ClaimRules(leeway=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="audiences"):
        ClaimRules(audiences=())


def test_check_claims_can_leave_expiry_optional() -> None:
    check_claims({"aud": "spire"}, ClaimRules(audiences=("spire",), require_expiry=False), NOW)


@pytest.mark.parametrize(
    ("algorithm", "key_algorithm", "message"),
    [
        ("ES256", "RS256", "needs an EC key"),
        ("RS256", "ES256", "needs an RSA key"),
        ("EdDSA", "ES256", "needs an Ed25519"),
        ("HS256", "RS256", "not supported"),
    ],
)
def test_sign_jwt_refuses_a_key_that_does_not_fit(
    algorithm: str, key_algorithm: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sign_jwt({}, {}, TokenIssuer(key_algorithm).key, algorithm)


def test_the_header_type_can_be_restricted() -> None:
    issuer = TokenIssuer()
    allowed = {"JWT", "JOSE"}
    verify(issuer, issuer.issue(claims()), types=allowed)
    with pytest.raises(MalformedJwtError, match='type must be "JOSE" or "JWT"'):
        verify(issuer, issuer.issue(claims(), header={"typ": "at+jwt"}), types=allowed)
    untyped = sign_jwt({"kid": issuer.key_id}, claims(), issuer.key, "RS256")
    verify(issuer, untyped, types=allowed)
