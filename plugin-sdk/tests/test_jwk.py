"""JWK conversion of public keys: exact encodings and strict parsing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.jwk import (
    PublicKey,
    b64url_decode,
    b64url_encode,
    jwk_thumbprint,
    jwk_to_spki,
    public_key_from_jwk,
    public_key_to_jwk,
    spki_to_jwk,
)


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("curve", "name", "size"),
    [(ec.SECP256R1(), "P-256", 32), (ec.SECP384R1(), "P-384", 48), (ec.SECP521R1(), "P-521", 66)],
)
def test_ec_keys_round_trip_with_full_length_coordinates(
    curve: ec.EllipticCurve, name: str, size: int
) -> None:
    key = ec.generate_private_key(curve).public_key()
    jwk = public_key_to_jwk(key, kid="k1", use="jwt-svid")
    assert jwk["kty"] == "EC"
    assert jwk["crv"] == name
    assert jwk["kid"] == "k1"
    assert jwk["use"] == "jwt-svid"
    assert len(b64url_decode(jwk["x"])) == size
    assert len(b64url_decode(jwk["y"])) == size
    assert "=" not in jwk["x"] + jwk["y"]
    assert spki(public_key_from_jwk(jwk)) == spki(key)
    assert jwk_to_spki(jwk) == spki(key)
    assert spki_to_jwk(spki(key), kid="k1", use="jwt-svid") == jwk


def test_ec_coordinate_with_leading_zero_keeps_its_full_length() -> None:
    for _ in range(2000):
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        if key.public_numbers().x < 2**248:
            break
    else:
        pytest.fail("no P-256 key with a short x coordinate in 2000 tries")
    jwk = public_key_to_jwk(key)
    assert b64url_decode(jwk["x"])[0] == 0
    assert len(b64url_decode(jwk["x"])) == 32
    assert spki(public_key_from_jwk(jwk)) == spki(key)


def test_rsa_key_round_trips_with_minimal_integers() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwk = public_key_to_jwk(key)
    assert jwk == {
        "kty": "RSA",
        "n": b64url_encode(key.public_numbers().n.to_bytes(256, "big")),
        "e": "AQAB",
    }
    assert spki(public_key_from_jwk(jwk)) == spki(key)


def test_ed25519_key_round_trips() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    jwk = public_key_to_jwk(key, kid="ed")
    assert jwk["kty"] == "OKP"
    assert jwk["crv"] == "Ed25519"
    assert spki(public_key_from_jwk(jwk)) == spki(key)


def test_empty_kid_and_use_are_left_out() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert set(public_key_to_jwk(key, kid="", use="")) == {"kty", "crv", "x", "y"}


def test_unsupported_curve_is_rejected_on_output() -> None:
    key = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(InvalidArgumentError, match="cannot express the EC curve 'secp256k1'"):
        public_key_to_jwk(key)
    with pytest.raises(InvalidArgumentError, match="cannot express"):
        spki_to_jwk(spki(key))


def test_spki_to_jwk_rejects_garbage() -> None:
    with pytest.raises(InvalidArgumentError, match="not a valid SubjectPublicKeyInfo"):
        spki_to_jwk(b"\x30\x03garbage")


@pytest.fixture(scope="module")
def p256_jwk() -> dict[str, Any]:
    return public_key_to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kty": None}, "'kty' is missing"),
        ({"kty": 3}, "'kty' must be a string"),
        ({"kty": "oct"}, "'kty' 'oct' is not supported"),
        ({"crv": "P-192"}, "'crv' 'P-192' is not supported"),
        ({"crv": None}, "'crv' is missing"),
        ({"x": None}, "'x' is missing"),
        ({"y": "!!!"}, "'y' is not base64url"),
        ({"y": "AAAA===="}, "'y' is not base64url"),
        ({"x": b64url_encode(b"\x01" * 31)}, "'x' is 31 bytes, expected 32 for P-256"),
        ({"x": b64url_encode(b"\x01" * 33)}, "'x' is 33 bytes, expected 32 for P-256"),
        ({"x": b64url_encode(b"\x00" * 31 + b"\x01")}, "not on the curve P-256"),
    ],
)
def test_malformed_ec_jwks_are_rejected(
    p256_jwk: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    jwk = {**p256_jwk, **change}
    jwk = {key: value for key, value in jwk.items() if value is not None}
    with pytest.raises(InvalidArgumentError, match=message):
        public_key_from_jwk(jwk)


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "RSA", "e": "AQAB"}, "'n' is missing"),
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "RSA key is invalid"),
        ({"kty": "OKP", "crv": "X25519", "x": "AA"}, "'crv' 'X25519' is not supported"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "'x' is 3 bytes, expected 32"),
        ([], "must be a JSON object"),
    ],
)
def test_malformed_rsa_and_okp_jwks_are_rejected(jwk: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        public_key_from_jwk(jwk)


def test_b64url_decode_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="must be a base64url string"):
        b64url_decode(b"AA", member="n")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="'n' is not base64url"):
        b64url_decode("A", member="n")
    with pytest.raises(InvalidArgumentError, match="not base64url"):
        b64url_decode("ab+/")


@given(st.binary(max_size=200))
def test_property_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text
    assert b64url_decode(text) == data
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_thumbprint_matches_rfc_7638_example() -> None:
    # The RSA key of RFC 7638 section 3.1 and its published thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
        "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    key = public_key_from_jwk({"kty": "RSA", "n": n, "e": "AQAB"})
    assert jwk_thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_is_stable_and_key_specific() -> None:
    first = ec.generate_private_key(ec.SECP256R1()).public_key()
    second = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert jwk_thumbprint(first) == jwk_thumbprint(public_key_from_jwk(public_key_to_jwk(first)))
    assert jwk_thumbprint(first) != jwk_thumbprint(second)


def test_a_jwk_set_keeps_the_signature_keys_by_kid() -> None:
    from pyspire_sdk.jwk import parse_jwk_set

    first = ec.generate_private_key(ec.SECP256R1()).public_key()
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    third = ed25519.Ed25519PrivateKey.generate().public_key()
    document = {
        "keys": [
            public_key_to_jwk(first, kid="a", use="sig"),
            public_key_to_jwk(second, kid="a"),
            public_key_to_jwk(third, kid="b"),
            public_key_to_jwk(first, kid="enc", use="enc"),
            public_key_to_jwk(first),  # no kid
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "bad", "crv": "P-256", "x": "AA", "y": "AA"},
            "not an object",
        ]
    }
    keys = parse_jwk_set(document)
    assert [spki(key) for key in keys.find("a")] == [spki(first), spki(second)]
    assert [spki(key) for key in keys.find("b")] == [spki(third)]
    assert keys.find("enc") == ()
    assert keys.skipped == 5
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("document", "message"),
    [([], "must be a JSON object"), ({}, "'keys' is missing"), ({"keys": {}}, "not an array")],
)
def test_a_jwk_set_document_must_have_a_keys_array(document: object, message: str) -> None:
    from pyspire_sdk.jwk import parse_jwk_set

    with pytest.raises(InvalidArgumentError, match=message):
        parse_jwk_set(document)
