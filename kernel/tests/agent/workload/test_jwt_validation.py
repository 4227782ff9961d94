"""JWT-SVID validation: what passes and every rule that rejects a token."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.agent.workload.jwt_validation import (
    ALLOWED_ALGORITHMS,
    filter_foreign_claims,
    validate_jwt_svid,
)
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

from .helpers import FOREIGN, TD, JwtSigner, b64url, rsa_key, sign_raw

NOW = datetime(2030, 1, 1, tzinfo=UTC)
EXP = int(NOW.timestamp()) + 300
SUBJECT = "spiffe://example.org/workload"


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": SUBJECT, "aud": ["service"], "exp": EXP, "iat": EXP - 300}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


@pytest.fixture(scope="module")
def signer() -> JwtSigner:
    return JwtSigner(TD)


@pytest.fixture(scope="module")
def bundles(signer: JwtSigner) -> dict[TrustDomain, Bundle]:
    return {TD: Bundle(trust_domain=TD, jwt_authorities=(signer.authority,))}


def validate(token: str, bundles: dict[TrustDomain, Bundle], audience: str = "service") -> Any:
    return validate_jwt_svid(token, audience, bundles, NOW)


def test_a_valid_token_gives_its_subject_and_claims(
    signer: JwtSigner, bundles: dict[TrustDomain, Bundle]
) -> None:
    result = validate(signer.sign(claims(custom={"a": [1, 2]})), bundles)
    assert result.spiffe_id == SpiffeId.parse(SUBJECT)
    assert result.claims["aud"] == ["service"]
    assert result.claims["custom"] == {"a": [1, 2]}


def test_a_string_audience_is_accepted(
    signer: JwtSigner, bundles: dict[TrustDomain, Bundle]
) -> None:
    assert validate(signer.sign(claims(aud="service")), bundles).claims["aud"] == "service"


@pytest.mark.parametrize(
    ("make_key", "algorithms"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), ["ES256"]),
        (lambda: ec.generate_private_key(ec.SECP384R1()), ["ES384"]),
        (lambda: ec.generate_private_key(ec.SECP521R1()), ["ES512"]),
        (rsa_key, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]),
    ],
    ids=["p256", "p384", "p521", "rsa"],
)
def test_every_allowed_algorithm_verifies(
    make_key: Callable[[], Any], algorithms: list[str]
) -> None:
    signer = JwtSigner(TD, key=make_key())
    trusted = {TD: Bundle(trust_domain=TD, jwt_authorities=(signer.authority,))}
    for algorithm in algorithms:
        assert algorithm in ALLOWED_ALGORITHMS
        token = signer.sign(claims(), alg=algorithm)
        assert validate(token, trusted).spiffe_id == SpiffeId.parse(SUBJECT)


def _header(signer: JwtSigner, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    header.update(changes)
    return {name: value for name, value in header.items() if value is not None}


def _tamper_signature(token: str) -> str:
    head, body, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{body}.{flipped}{signature[1:]}"


def _swap_claims(signer: JwtSigner) -> str:
    head, _, signature = signer.sign(claims()).split(".")
    other = b64url(json.dumps(claims(sub="spiffe://example.org/admin")).encode())
    return f"{head}.{other}.{signature}"


def _raw_token(signer: JwtSigner, header: str, body: str) -> str:
    signing_input = f"{b64url(header.encode())}.{b64url(body.encode())}"
    return f"{signing_input}.{b64url(sign_raw(signer.key, 'ES256', signing_input.encode()))}"


REJECTIONS: list[tuple[str, Callable[[JwtSigner], str], str]] = [
    ("empty", lambda s: "", "svid must be specified"),
    ("two parts", lambda s: "a.b", "expected JWS compact serialization with 3 parts"),
    (
        "json serialization",
        lambda s: json.dumps({"payload": "x", "signatures": []}),
        "3 parts",
    ),
    ("header not json", lambda s: "bm90LWpzb24." + s.sign(claims()).split(".", 1)[1], "not JSON"),
    (
        "duplicate claim",
        lambda s: _raw_token(
            s,
            json.dumps({"alg": "ES256", "kid": s.kid}),
            '{"sub":' + json.dumps(SUBJECT) + ',"sub":"spiffe://example.org/admin"}',
        ),
        "the claims has the member 'sub' twice",
    ),
    ("padding", lambda s: s.sign(claims()) + "=", "not non-empty base64url"),
    (
        "alg none",
        lambda s: s.sign(claims(), header=_header(s, alg="none"), alg="none") + "AA",
        'unsupported token signature algorithm "none"',
    ),
    (
        "alg none, empty signature",
        lambda s: s.sign(claims(), header=_header(s, alg="none"), alg="none"),
        "not non-empty base64url",
    ),
    (
        "HS256",
        lambda s: s.sign(claims(), header=_header(s, alg="HS256"), alg="HS256"),
        'unsupported token signature algorithm "HS256"',
    ),
    (
        "EdDSA",
        lambda s: s.sign(claims(), header=_header(s, alg="EdDSA")),
        'unsupported token signature algorithm "EdDSA"',
    ),
    (
        "wrong alg for the key",
        lambda s: s.sign(claims(), header=_header(s, alg="RS256")),
        "needs an RSA key",
    ),
    (
        "ES384 with a P-256 key",
        lambda s: s.sign(claims(), header=_header(s, alg="ES384")),
        "needs an EC key on secp384r1",
    ),
    (
        "missing alg",
        lambda s: s.sign(claims(), header=_header(s, alg=None)),
        "token header missing algorithm",
    ),
    (
        "missing kid",
        lambda s: s.sign(claims(), header=_header(s, kid=None)),
        "token header missing key id",
    ),
    (
        "empty kid",
        lambda s: s.sign(claims(), header=_header(s, kid="")),
        "token header missing key id",
    ),
    (
        "unknown kid",
        lambda s: s.sign(claims(), header=_header(s, kid="other")),
        'key "other" not found in trust domain "example.org"',
    ),
    (
        "extra header field",
        lambda s: s.sign(claims(), header=_header(s, jku="https://x")),
        "token header has fields a JWT-SVID must not have: jku",
    ),
    (
        "bad typ",
        lambda s: s.sign(claims(), header=_header(s, typ="at+jwt")),
        'token header type must be "JWT" or "JOSE"',
    ),
    ("bad signature", lambda s: _tamper_signature(s.sign(claims())), "token signature"),
    ("claims swapped", _swap_claims, "token signature is not valid"),
    ("expired", lambda s: s.sign(claims(exp=int(NOW.timestamp()))), "token has expired"),
    ("missing exp", lambda s: s.sign(claims(exp=None)), "token is missing the expiry claim"),
    ("exp not a number", lambda s: s.sign(claims(exp="soon")), "'exp' must be a number"),
    ("not before in the future", lambda s: s.sign(claims(nbf=EXP)), "token is not valid yet"),
    ("issued in the future", lambda s: s.sign(claims(iat=EXP)), "token was issued in the future"),
    (
        "wrong audience",
        lambda s: s.sign(claims(aud=["other"])),
        'expected audience in ["service"] (audience=["other"])',
    ),
    ("missing audience", lambda s: s.sign(claims(aud=None)), "missing the audience claim"),
    ("empty audience list", lambda s: s.sign(claims(aud=[])), "missing the audience claim"),
    ("missing sub", lambda s: s.sign(claims(sub=None)), "token is missing the subject claim"),
    (
        "sub not a spiffe id",
        lambda s: s.sign(claims(sub="https://example.org/x")),
        "token has an invalid subject claim",
    ),
    (
        "foreign trust domain without bundle",
        lambda s: s.sign(claims(sub="spiffe://foreign.test/workload")),
        'no keys found for trust domain "foreign.test"',
    ),
]


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [(make, reason) for _, make, reason in REJECTIONS],
    ids=[name for name, _, _ in REJECTIONS],
)
def test_rejections(
    signer: JwtSigner,
    bundles: dict[TrustDomain, Bundle],
    make_token: Callable[[JwtSigner], str],
    reason: str,
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        validate(make_token(signer), bundles)
    assert reason in str(raised.value)


def test_a_key_of_another_trust_domain_does_not_verify(
    signer: JwtSigner, bundles: dict[TrustDomain, Bundle]
) -> None:
    foreign = JwtSigner(FOREIGN, kid=signer.kid)
    trusted = {
        **bundles,
        FOREIGN: Bundle(trust_domain=FOREIGN, jwt_authorities=(foreign.authority,)),
    }
    # Signed by our key but claiming a foreign subject: the foreign bundle's key must be used.
    with pytest.raises(InvalidArgumentError, match="token signature is not valid"):
        validate(signer.sign(claims(sub="spiffe://foreign.test/w")), trusted)
    assert validate(foreign.sign(claims(sub="spiffe://foreign.test/w")), trusted).spiffe_id == (
        SpiffeId.parse("spiffe://foreign.test/w")
    )


def test_an_empty_audience_is_refused(
    signer: JwtSigner, bundles: dict[TrustDomain, Bundle]
) -> None:
    with pytest.raises(InvalidArgumentError, match="audience must be specified"):
        validate(signer.sign(claims()), bundles, audience="")


def test_the_token_never_appears_in_a_message(
    signer: JwtSigner, bundles: dict[TrustDomain, Bundle]
) -> None:
    token = signer.sign(claims(aud=["other"]))
    with pytest.raises(InvalidArgumentError) as raised:
        validate(token, bundles)
    assert token.split(".")[2] not in str(raised.value)


def test_foreign_claims_are_reduced_to_the_spiffe_ones() -> None:
    full = {"sub": "s", "aud": ["a"], "exp": 1, "iat": 0, "email": "x", "group": "g"}
    assert filter_foreign_claims(full) == {"sub": "s", "aud": ["a"], "exp": 1}
    assert filter_foreign_claims(full, frozenset({"email"})) == {
        "sub": "s",
        "aud": ["a"],
        "exp": 1,
        "email": "x",
    }
