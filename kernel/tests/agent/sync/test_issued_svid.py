"""Checking an X509-SVID the server returned (:meth:`IssuedSvid.inspect`): each certificate is
parsed once, a key the caller made is not decoded again, and nothing it refused before passes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.agent.cache import IssuedSvid
from pyspire.der import elements, encode_tlv, join_signed, read_tlv, split_signed
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import X509Svid
from pyspire_sdk.testing import FakeClock

from .fakes import FakeCa, entry

WEB = entry("web")


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def ca(fake_clock: FakeClock) -> FakeCa:
    return FakeCa(fake_clock)


def _svid(ca: FakeCa, clock: FakeClock, key: ec.EllipticCurvePrivateKey) -> X509Svid:
    leaf = ca.sign_leaf(WEB.spiffe_id, key.public_key(), clock.now(), timedelta(hours=1))
    der = leaf.public_bytes(serialization.Encoding.DER)
    return X509Svid(WEB.spiffe_id, (der,), clock.now(), _pkcs8(key))


def _re_signed(ca: FakeCa, certificate: bytes, edit: dict[int, bytes]) -> bytes:
    """``certificate`` with the TBS elements at the indexes of ``edit`` replaced, signed again
    by ``ca`` (so only the edit differs)."""
    tbs, algorithm, _ = split_signed(certificate)
    _, start, end = read_tlv(tbs)
    parts = elements(tbs[start:end])
    for index, value in edit.items():
        parts[index] = value
    new_tbs = encode_tlv(0x30, b"".join(parts))
    return join_signed(new_tbs, algorithm, ca.key.sign(new_tbs, ec.ECDSA(hashes.SHA256())))


def test_a_known_public_key_spares_decoding_the_private_key(
    ca: FakeCa, fake_clock: FakeClock
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    svid = _svid(ca, fake_clock, key)
    checked = IssuedSvid.inspect(WEB, svid, public_key_info=_spki(key))
    assert checked == IssuedSvid.inspect(WEB, svid)
    # The private key is the caller's, already known to match: its bytes are not read again.
    sealed = X509Svid(svid.spiffe_id, svid.cert_chain, svid.expires_at, b"kept elsewhere")
    assert IssuedSvid.inspect(WEB, sealed, public_key_info=_spki(key)).svid == sealed
    with pytest.raises(InvalidArgumentError, match="not a PKCS#8 key"):
        IssuedSvid.inspect(WEB, sealed)


def test_a_leaf_for_another_key_is_refused_either_way(ca: FakeCa, fake_clock: FakeClock) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    svid = _svid(ca, fake_clock, other)
    mine = X509Svid(svid.spiffe_id, svid.cert_chain, svid.expires_at, _pkcs8(key))
    with pytest.raises(InvalidArgumentError, match="does not certify the private key"):
        IssuedSvid.inspect(WEB, mine, public_key_info=_spki(key))
    with pytest.raises(InvalidArgumentError, match="does not certify the private key"):
        IssuedSvid.inspect(WEB, mine)


def test_a_leaf_with_the_key_encoded_otherwise_is_accepted(
    ca: FakeCa, fake_clock: FakeClock
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    svid = _svid(ca, fake_clock, key)
    compressed = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    spki = _spki(key)
    _, start, _ = read_tlv(spki)
    _, _, algorithm_end = read_tlv(spki, start)
    compressed_spki = encode_tlv(
        0x30, spki[start:algorithm_end] + encode_tlv(0x03, b"\x00" + compressed)
    )
    leaf = _re_signed(ca, svid.cert_chain[0], {6: compressed_spki})
    assert compressed_spki in leaf
    x509.load_der_x509_certificate(leaf).verify_directly_issued_by(ca.certificate)
    reencoded = X509Svid(svid.spiffe_id, (leaf,), svid.expires_at, svid.private_key)
    assert IssuedSvid.inspect(WEB, reencoded, public_key_info=spki).svid == reencoded
    assert IssuedSvid.inspect(WEB, reencoded).svid == reencoded


def test_malformed_extensions_are_refused_not_raised(ca: FakeCa, fake_clock: FakeClock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    svid = _svid(ca, fake_clock, key)
    tbs, _, _ = split_signed(svid.cert_chain[0])
    _, start, end = read_tlv(tbs)
    parts = elements(tbs[start:end])
    _, wrapper_start, _ = read_tlv(parts[7])
    _, list_start, list_end = read_tlv(parts[7], wrapper_start)
    extensions = elements(parts[7][list_start:list_end])
    twice = encode_tlv(0xA3, encode_tlv(0x30, b"".join([*extensions, extensions[-1]])))
    leaf = _re_signed(ca, svid.cert_chain[0], {7: twice})
    duplicated = X509Svid(svid.spiffe_id, (leaf,), svid.expires_at, svid.private_key)
    with pytest.raises(InvalidArgumentError, match="holds an invalid certificate"):
        IssuedSvid.inspect(WEB, duplicated, public_key_info=_spki(key))
