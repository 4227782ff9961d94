"""The encodings bundle publishers write."""

from __future__ import annotations

import json

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.bundle_formats import BundleFormat, encode_bundle
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import TestAuthority, jwt_authority

TD = TrustDomain("example.org")


def bundle() -> Bundle:
    authority = TestAuthority(TD)
    return Bundle(
        TD,
        x509_authorities=(authority.x509_authority,),
        jwt_authorities=(jwt_authority(authority.key, "k1"),),
        sequence_number=7,
        refresh_hint=300,
    )


def test_spiffe_is_the_spiffe_bundle_document() -> None:
    original = bundle()
    assert Bundle.from_spiffe_json(TD, encode_bundle(original, BundleFormat.SPIFFE)) == original


def test_jwks_has_both_kinds_of_key_and_no_spiffe_parameter() -> None:
    original = bundle()
    document = json.loads(encode_bundle(original, BundleFormat.JWKS))
    spiffe = original.to_spiffe_document()
    assert set(document) == {"keys"}
    assert document["keys"] == [
        {name: value for name, value in key.items() if name != "use"} for key in spiffe["keys"]
    ]
    assert "x5c" in document["keys"][0] and document["keys"][1]["kid"] == "k1"


def test_pem_holds_the_x509_authorities_only() -> None:
    original = bundle()
    encoded = encode_bundle(original, BundleFormat.PEM)
    assert encoded == original.to_pem().encode()
    assert Bundle.from_pem(TD, encoded).x509_authorities == original.x509_authorities


def test_the_same_bundle_encodes_to_the_same_bytes() -> None:
    original = bundle()
    for bundle_format in BundleFormat:
        assert encode_bundle(original, bundle_format) == encode_bundle(original, bundle_format)
