"""Trust bundles and their formats: SPIFFE bundle JSON, PEM, Workload API encodings."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.jwk import b64url_decode, public_key_from_jwk
from pyspire_sdk.spiffeid import TrustDomain

TD = TrustDomain("example.org")
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def make_ca(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None, name: str = "root"
) -> tuple[bytes, Any]:
    """A self-signed CA certificate (DER) and its private key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER), key


def spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


@pytest.fixture(scope="module")
def cas() -> list[tuple[bytes, Any]]:
    return [
        make_ca(ec.generate_private_key(ec.SECP256R1()), "p256"),
        make_ca(ec.generate_private_key(ec.SECP384R1()), "p384"),
        make_ca(rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa"),
    ]


@pytest.fixture(scope="module")
def jwt_keys() -> list[JwtAuthority]:
    return [
        JwtAuthority("key-ec", spki(ec.generate_private_key(ec.SECP256R1()).public_key())),
        JwtAuthority("key-p521", spki(ec.generate_private_key(ec.SECP521R1()).public_key())),
        JwtAuthority(
            "key-rsa",
            spki(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()),
        ),
    ]


@pytest.fixture(scope="module")
def bundle(cas: list[tuple[bytes, Any]], jwt_keys: list[JwtAuthority]) -> Bundle:
    return Bundle(
        trust_domain=TD,
        x509_authorities=tuple(X509Authority(der) for der, _ in cas),
        jwt_authorities=tuple(jwt_keys),
        sequence_number=42,
        refresh_hint=300,
    )


# -- the value type ---------------------------------------------------------------------------


def test_with_changes_moves_the_sequence_on(bundle: Bundle) -> None:
    changed = bundle.with_changes(refresh_hint=60)
    assert changed.sequence_number == 43
    assert changed.refresh_hint == 60
    assert bundle.refresh_hint == 300


def test_x509_authority_helpers(cas: list[tuple[bytes, Any]]) -> None:
    der, key = cas[0]
    authority = X509Authority(der)
    certificate = authority.certificate()
    assert spki(certificate.public_key()) == spki(key.public_key())
    assert X509Authority.from_certificate(certificate) == authority
    assert X509Authority.from_certificate(certificate, tainted=True).tainted
    with pytest.raises(InvalidArgumentError, match="not a valid DER certificate"):
        X509Authority(b"nope").certificate()


# -- SPIFFE bundle document -------------------------------------------------------------------


def test_spiffe_json_layout(bundle: Bundle, cas: list[tuple[bytes, Any]]) -> None:
    document = json.loads(bundle.to_spiffe_json())
    assert document["spiffe_sequence"] == 42
    assert document["spiffe_refresh_hint"] == 300
    keys = document["keys"]
    assert [key["use"] for key in keys] == ["x509-svid"] * 3 + ["jwt-svid"] * 3
    for key, (der, ca_key) in zip(keys[:3], cas, strict=True):
        assert "kid" not in key
        assert key["x5c"] == [base64.b64encode(der).decode()]
        assert spki(public_key_from_jwk(key)) == spki(ca_key.public_key())
    assert keys[0]["kty"] == "EC"
    assert keys[0]["crv"] == "P-256"
    assert len(b64url_decode(keys[1]["x"])) == 48
    assert keys[2]["kty"] == "RSA"
    assert [key["kid"] for key in keys[3:]] == ["key-ec", "key-p521", "key-rsa"]
    assert len(b64url_decode(keys[4]["y"])) == 66
    assert all("x5c" not in key for key in keys[3:])


def test_spiffe_json_omits_zero_values() -> None:
    document = json.loads(Bundle(trust_domain=TD).to_spiffe_json())
    assert document == {"keys": []}


def test_spiffe_json_indent_is_only_layout(bundle: Bundle) -> None:
    assert json.loads(bundle.to_spiffe_json(indent=2)) == json.loads(bundle.to_spiffe_json())
    assert "\n" in bundle.to_spiffe_json(indent=2)
    assert "\n" not in bundle.to_spiffe_json()


def test_spiffe_json_round_trip(bundle: Bundle) -> None:
    text = bundle.to_spiffe_json()
    assert Bundle.from_spiffe_json(TD, text) == bundle
    assert Bundle.from_spiffe_json(TD, text.encode()) == bundle
    assert Bundle.from_spiffe_json(TD, json.loads(text)) == bundle


def test_spiffe_json_drops_local_bookkeeping(bundle: Bundle) -> None:
    marked = Bundle(
        trust_domain=TD,
        x509_authorities=(X509Authority(bundle.x509_authorities[0].der, tainted=True),),
        jwt_authorities=(
            JwtAuthority("k", bundle.jwt_authorities[0].public_key, expires_at=NOW, tainted=True),
        ),
    )
    parsed = Bundle.from_spiffe_json(TD, marked.to_spiffe_json())
    assert parsed.x509_authorities == (X509Authority(bundle.x509_authorities[0].der),)
    assert parsed.jwt_authorities == (JwtAuthority("k", bundle.jwt_authorities[0].public_key),)


def test_spiffe_json_output_errors_name_the_authority(bundle: Bundle) -> None:
    broken = Bundle(trust_domain=TD, x509_authorities=(X509Authority(b"junk"),))
    with pytest.raises(InvalidArgumentError, match="x509 authority 0 is not a valid DER"):
        broken.to_spiffe_json()
    no_kid = Bundle(trust_domain=TD, jwt_authorities=(JwtAuthority("", b"x"),))
    with pytest.raises(InvalidArgumentError, match="jwt authority 0 has an empty key_id"):
        no_kid.to_spiffe_json()
    bad_key = Bundle(trust_domain=TD, jwt_authorities=(JwtAuthority("k", b"junk"),))
    with pytest.raises(InvalidArgumentError, match=r"jwt authority 0 \('k'\): public key"):
        bad_key.to_spiffe_json()
    k1 = ec.generate_private_key(ec.SECP256K1())
    odd_curve = Bundle(trust_domain=TD, x509_authorities=(X509Authority(make_ca(k1)[0]),))
    with pytest.raises(InvalidArgumentError, match="x509 authority 0: jwk cannot express"):
        odd_curve.to_spiffe_json()


def test_parsing_ignores_unknown_kty_and_use_and_extra_members(bundle: Bundle) -> None:
    document = json.loads(bundle.to_spiffe_json())
    document["keys"].extend(
        [
            {"kty": "oct", "use": "jwt-svid", "kid": "sym", "k": "AAAA"},
            {"kty": "EC", "use": "wit-svid", "kid": "w"},
            {"kty": "EC", "kid": "no-use"},
            {"kty": "EC", "use": "X509-SVID"},  # use is case-sensitive
            {"kty": "EC", "use": "x509-svid"},  # no x5c: ignored as the standard asks
            {"kty": "EC", "use": "x509-svid", "x5c": []},
        ]
    )
    document["unknown_top_level"] = {"anything": True}
    assert Bundle.from_spiffe_json(TD, document) == bundle


def test_parsing_an_empty_key_set_gives_an_empty_bundle() -> None:
    assert Bundle.from_spiffe_json(TD, '{"keys": []}') == Bundle(trust_domain=TD)


def _x509_key(bundle: Bundle) -> dict[str, Any]:
    key: dict[str, Any] = json.loads(bundle.to_spiffe_json())["keys"][0]
    return key


def _jwt_key(bundle: Bundle) -> dict[str, Any]:
    key: dict[str, Any] = json.loads(bundle.to_spiffe_json())["keys"][3]
    return key


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", "is not valid JSON"),
        ("{", "is not valid JSON"),
        (b"\xff\xfe", "is not UTF-8 text"),
        ("[]", "expected a JSON object, found an array"),
        ("{}", "'keys' is missing"),
        ('{"keys": {}}', "'keys' must be an array, found an object"),
        ('{"keys": [1]}', "key 0: expected an object, found a number"),
        ('{"keys": [{"use": "jwt-svid"}]}', "key 0: 'kty' is missing"),
        ('{"keys": [{"kty": 1}]}', "key 0: 'kty' must be a string"),
        ('{"keys": [], "spiffe_sequence": -1}', "'spiffe_sequence' must be between 0 and"),
        ('{"keys": [], "spiffe_sequence": 1.5}', "'spiffe_sequence' must be an integer"),
        ('{"keys": [], "spiffe_sequence": "1"}', "'spiffe_sequence' must be an integer"),
        ('{"keys": [], "spiffe_sequence": 18446744073709551616}', "must be between 0 and"),
        ('{"keys": [], "spiffe_refresh_hint": true}', "'spiffe_refresh_hint' must be an integer"),
        ('{"keys": [], "spiffe_refresh_hint": -5}', "'spiffe_refresh_hint' must be between"),
    ],
)
def test_malformed_documents_are_rejected(data: str | bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid SPIFFE bundle document") as raised:
        Bundle.from_spiffe_json(TD, data)
    assert message in str(raised.value)


def test_largest_sequence_number_is_accepted() -> None:
    parsed = Bundle.from_spiffe_json(TD, '{"keys": [], "spiffe_sequence": 18446744073709551615}')
    assert parsed.sequence_number == 2**64 - 1


def _reject(key: dict[str, Any], message: str, index: int = 0) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        Bundle.from_spiffe_json(TD, {"keys": [key]})
    text = str(raised.value)
    assert text.startswith("invalid SPIFFE bundle document: ")
    assert f"key {index}: " in text
    assert message in text, text


def test_x509_key_with_two_certificates_is_rejected(bundle: Bundle) -> None:
    key = _x509_key(bundle)
    key["x5c"] = key["x5c"] * 2
    _reject(key, "'x5c' must hold exactly one certificate, found 2")


def test_x509_key_with_base64url_is_rejected(bundle: Bundle) -> None:
    key = _x509_key(bundle)
    der = bundle.x509_authorities[0].der
    key["x5c"] = [base64.urlsafe_b64encode(der).decode().rstrip("=")]
    if key["x5c"][0] == base64.b64encode(der).decode():
        pytest.skip("this certificate's base64 has no url-specific characters")
    _reject(key, "'x5c' entry is not standard base64")


@pytest.mark.parametrize(
    ("x5c", "message"),
    [
        ("not-a-list", "'x5c' must be an array, found a string"),
        ([7], "'x5c' entry must be a string"),
        ([base64.b64encode(b"garbage").decode()], "'x5c' entry is not a valid DER certificate"),
    ],
)
def test_x509_key_with_bad_x5c_is_rejected(bundle: Bundle, x5c: Any, message: str) -> None:
    key = _x509_key(bundle)
    key["x5c"] = x5c
    _reject(key, message)


def test_x509_key_params_must_match_the_certificate(bundle: Bundle) -> None:
    key = _x509_key(bundle)
    other = json.loads(bundle.to_spiffe_json())["keys"][3]  # a different P-256 key
    key["x"], key["y"] = other["x"], other["y"]
    _reject(key, "key parameters do not match the certificate's public key")


def test_x509_key_params_must_be_present_and_well_formed(bundle: Bundle) -> None:
    key = _x509_key(bundle)
    del key["y"]
    _reject(key, "jwk member 'y' is missing")
    key = _x509_key(bundle)
    key["x"] = key["x"][1:]
    _reject(key, "jwk member 'x'")


def test_x509_key_kty_must_agree_with_the_certificate(bundle: Bundle) -> None:
    key = _x509_key(bundle)
    rsa_key = json.loads(bundle.to_spiffe_json())["keys"][2]
    key.update({"kty": "RSA", "n": rsa_key["n"], "e": rsa_key["e"]})
    _reject(key, "do not match")


def test_jwt_key_needs_a_kid(bundle: Bundle) -> None:
    key = _jwt_key(bundle)
    del key["kid"]
    _reject(key, "'kid' is required for a jwt-svid key")
    key["kid"] = ""
    _reject(key, "'kid' is required for a jwt-svid key")
    key["kid"] = 5
    _reject(key, "'kid' must be a string, found a number")


def test_jwt_key_with_bad_params_is_rejected(bundle: Bundle) -> None:
    key = _jwt_key(bundle)
    key["crv"] = "P-999"
    _reject(key, "'crv' 'P-999' is not supported")


def test_duplicate_kid_is_rejected_with_the_second_index(bundle: Bundle) -> None:
    first = _jwt_key(bundle)
    second = copy.deepcopy(first)
    with pytest.raises(InvalidArgumentError, match=r"key 1: 'kid' 'key-ec' is used by another"):
        Bundle.from_spiffe_json(TD, {"keys": [first, second]})


def test_the_failing_key_index_counts_ignored_keys(bundle: Bundle) -> None:
    key = _jwt_key(bundle)
    del key["kid"]
    ignored = {"kty": "oct", "use": "jwt-svid"}
    with pytest.raises(InvalidArgumentError, match="key 2: 'kid' is required"):
        Bundle.from_spiffe_json(TD, {"keys": [ignored, ignored, key]})


# -- PEM --------------------------------------------------------------------------------------


def test_pem_round_trip_keeps_order(bundle: Bundle) -> None:
    pem = bundle.to_pem()
    assert pem.count("-----BEGIN CERTIFICATE-----") == 3
    assert all(len(line) <= 64 for line in pem.splitlines())
    parsed = Bundle.from_pem(TD, pem)
    assert parsed == Bundle(trust_domain=TD, x509_authorities=bundle.x509_authorities)
    assert Bundle.from_pem(TD, pem.encode()) == parsed


def test_pem_matches_cryptography_and_is_read_by_it(bundle: Bundle) -> None:
    pem = bundle.to_pem()
    loaded = x509.load_pem_x509_certificates(pem.encode())
    assert [c.public_bytes(serialization.Encoding.DER) for c in loaded] == [
        authority.der for authority in bundle.x509_authorities
    ]
    expected = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in loaded)
    assert pem == expected


def test_pem_parsing_ignores_text_between_blocks_and_crlf(bundle: Bundle) -> None:
    pem = "# trust bundle\n" + bundle.to_pem().replace("\n", "\r\n") + "trailing words\n"
    parsed = Bundle.from_pem(TD, pem)
    assert parsed.x509_authorities == bundle.x509_authorities


def test_empty_bundle_has_empty_pem() -> None:
    assert Bundle(trust_domain=TD).to_pem() == ""


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        ("", "pem bundle has no CERTIFICATE block"),
        ("just text", "pem bundle has no CERTIFICATE block"),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "pem block 0 is 'PRIVATE KEY', expected 'CERTIFICATE'",
        ),
        (
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "pem block 0 is not valid base64",
        ),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "pem block 0 is not a valid certificate",
        ),
        (b"\xff", "pem bundle is not ASCII text"),
    ],
)
def test_malformed_pem_is_rejected(pem: str | bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Bundle.from_pem(TD, pem)


def test_the_failing_pem_block_is_named(bundle: Bundle) -> None:
    pem = bundle.to_pem() + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(InvalidArgumentError, match="pem block 3 is not a valid certificate"):
        Bundle.from_pem(TD, pem)


# -- Workload API encodings -------------------------------------------------------------------


def test_jwt_bundle_jwks_is_a_plain_jwk_set(bundle: Bundle, jwt_keys: list[JwtAuthority]) -> None:
    document = json.loads(bundle.jwt_bundle_jwks())
    assert set(document) == {"keys"}
    assert [key["kid"] for key in document["keys"]] == ["key-ec", "key-p521", "key-rsa"]
    for key, authority in zip(document["keys"], jwt_keys, strict=True):
        assert "use" not in key
        assert "x5c" not in key
        assert spki(public_key_from_jwk(key)) == authority.public_key


def test_jwt_bundle_jwks_of_a_bundle_without_jwt_keys() -> None:
    assert json.loads(Bundle(trust_domain=TD).jwt_bundle_jwks()) == {"keys": []}


def test_jwt_bundle_jwks_refuses_a_key_without_kid() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(InvalidArgumentError, match="empty key_id"):
        Bundle(trust_domain=TD, jwt_authorities=(JwtAuthority("", spki(key)),)).jwt_bundle_jwks()


def test_x509_authorities_der_is_the_concatenation(
    bundle: Bundle, cas: list[tuple[bytes, Any]]
) -> None:
    der = bundle.x509_authorities_der()
    assert der == b"".join(certificate for certificate, _ in cas)
    assert Bundle(trust_domain=TD).x509_authorities_der() == b""
    # DER is self-delimiting: the concatenation splits back into the same certificates
    parsed = []
    rest = der
    while rest:
        certificate = x509.load_der_x509_certificate(rest[: _der_length(rest)])
        parsed.append(certificate.public_bytes(serialization.Encoding.DER))
        rest = rest[_der_length(rest) :]
    assert parsed == [certificate for certificate, _ in cas]


def _der_length(data: bytes) -> int:
    """The length of the DER element at the start of ``data`` (tag, length, content)."""
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")
