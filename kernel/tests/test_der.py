from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyspire.der import encode_tlv, join_signed, read_tlv, split_signed


def self_signed_certificate() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )


def test_split_and_join_give_back_the_same_certificate() -> None:
    der = self_signed_certificate().public_bytes(serialization.Encoding.DER)
    tbs, algorithm, signature = split_signed(der)
    assert join_signed(tbs, algorithm, signature) == der
    assert x509.load_der_x509_certificate(der).signature == signature


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536, 70000])
def test_lengths_round_trip(size: int) -> None:
    element = encode_tlv(0x04, b"x" * size)
    tag, start, end = read_tlv(element)
    assert (tag, end - start, end) == (0x04, size, len(element))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x30\x05\x01", b"\x30\x85\x00\x00\x00\x00\x01", b"\x04\x02ab"],
)
def test_malformed_input_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="DER"):
        split_signed(data)
