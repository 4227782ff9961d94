"""X509-SVIDs follow the X509-SVID standard extension by extension, and verify with OpenSSL."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyspire.ca.authorities import X509CA
from pyspire.ca.signing import ManagedKey, sign_certificate
from pyspire.ca.svid_der import (
    DEFAULT_SVID_SUBJECT,
    encode_integer,
    encode_oid,
    encode_validity,
    leaf_names,
    random_serial_elements,
    svid_tbs,
)
from pyspire.ca.templates import CaSubject, ca_builder
from pyspire.ca.x509svid import (
    CheckedKey,
    LeafRequest,
    MintedSvid,
    checked_csr,
    mint_x509_svid,
    mint_x509_svids,
    public_key_from_csr,
)
from pyspire.der import encode_tlv, join_signed, read_tlv, replace_csr_public_key, split_signed
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugins.credential_composer import SubjectAttribute
from pyspire_sdk.plugins.key_manager import KeyType
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock

from .conftest import svid_builder

TD = TrustDomain("example.org")


async def mint_leaf(ca: X509CA, **arguments: object) -> list[x509.Certificate]:
    minted = await mint_x509_svid(ca, **arguments)  # type: ignore[arg-type]
    return [x509.load_der_x509_certificate(der) for der in minted.chain]


WORKLOAD = SpiffeId.parse("spiffe://example.org/workload/web")


async def make_ca(key_manager: InProcessKeyManager, clock: FakeClock, ttl: timedelta) -> X509CA:
    key = ManagedKey(key_manager, await key_manager.generate_key("ca", KeyType.EC_P256))
    builder = ca_builder(
        trust_domain=TD,
        template=CaSubject().ca_template(ttl),
        public_key=key.load_public_key(),  # type: ignore[arg-type]
        now=clock.now(),
    )
    return X509CA(await sign_certificate(builder, key), key)


def extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:  # type: ignore[type-arg]
    return certificate.extensions.get_extension_for_class(kind)


async def test_every_extension_follows_the_x509_svid_standard(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=24))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    [leaf] = await mint_leaf(
        ca,
        spiffe_id=WORKLOAD,
        public_key=leaf_key.public_key(),
        ttl=timedelta(hours=1),
        now=fake_clock.now(),
        dns_names=("web.example.org", "www.example.org"),
    )
    leaf.verify_directly_issued_by(ca.certificate)

    san = extension(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(WORKLOAD)]
    assert san.get_values_for_type(x509.DNSName) == ["web.example.org", "www.example.org"]

    basic = extension(leaf, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False

    usage = extension(leaf, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.key_encipherment
    assert usage.value.key_agreement
    assert not usage.value.key_cert_sign and not usage.value.crl_sign

    eku = extension(leaf, x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}

    ski = extension(leaf, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key())
    aki = extension(leaf, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == extension(ca.certificate, x509.SubjectKeyIdentifier).value.digest

    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "SPIRE"
    assert leaf.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "US"
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web.example.org"

    assert 0 < leaf.serial_number < 2**128
    assert leaf.not_valid_after_utc == fake_clock.now() + timedelta(hours=1)
    assert leaf.not_valid_before_utc == fake_clock.now() - timedelta(seconds=10)


async def test_ca_certificate_has_what_strict_verifiers_need(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    ca = (await make_ca(key_manager, fake_clock, timedelta(hours=24))).certificate
    basic = extension(ca, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True
    usage = extension(ca, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert extension(ca, x509.SubjectKeyIdentifier)
    san = extension(ca, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    assert ca.subject.rfc4514_string()


async def test_svid_expiry_is_capped_at_the_ca_expiry(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=2))
    [leaf] = await mint_leaf(
        ca,
        spiffe_id=WORKLOAD,
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        ttl=timedelta(hours=10),
        now=fake_clock.now(),
    )
    assert leaf.not_valid_after_utc == ca.not_after
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []


async def test_openssl_accepts_the_svid_against_the_bundle(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, tmp_path: Path
) -> None:
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=24))
    [leaf] = await mint_leaf(
        ca,
        spiffe_id=WORKLOAD,
        public_key=rsa.generate_private_key(65537, 2048).public_key(),
        ttl=timedelta(hours=1),
        now=fake_clock.now(),
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    svid = tmp_path / "svid.pem"
    svid.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    attime = str(int(fake_clock.now().timestamp()) + 60)
    for purpose in ("sslclient", "sslserver"):
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-x509_strict",
                "-purpose",
                purpose,
                "-attime",
                attime,
                "-CAfile",
                bundle,
                svid,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


async def test_a_trust_domain_id_gets_no_svid(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=1))
    with pytest.raises(InvalidArgumentError, match="path"):
        await mint_x509_svid(
            ca,
            spiffe_id=TD.id,
            public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
            ttl=timedelta(minutes=5),
            now=fake_clock.now(),
        )


def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def test_csr_public_key_is_returned_when_the_signature_holds() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = public_key_from_csr(make_csr(key))
    assert public.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        (b"", "missing CSR"),
        (b"\x30\x03\x02\x01\x00", "malformed CSR"),
        (b"garbage", "malformed CSR"),
    ],
)
def test_bad_csrs_are_refused(csr: bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        public_key_from_csr(csr)


def test_csr_with_a_broken_signature_is_refused() -> None:
    der = bytearray(make_csr(ec.generate_private_key(ec.SECP256R1())))
    der[-5] ^= 0xFF
    with pytest.raises(InvalidArgumentError, match="CSR"):
        public_key_from_csr(bytes(der))


@pytest.mark.parametrize(
    "dns_names", [(), ("web.example.org",), ("a.example.org", "b.example.org")]
)
async def test_der_encoding_matches_the_cryptography_builder_byte_for_byte(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, dns_names: tuple[str, ...]
) -> None:
    """The hand-encoded TBS is exactly what cryptography's builder makes from the same inputs."""
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=24))
    public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    [leaf] = await mint_leaf(
        ca,
        spiffe_id=WORKLOAD,
        public_key=public_key,
        ttl=timedelta(hours=1),
        now=fake_clock.now(),
        dns_names=dns_names,
    )
    reference = svid_builder(
        spiffe_id=WORKLOAD,
        public_key=public_key,
        issuer=ca.certificate,
        now=fake_clock.now(),
        ttl=timedelta(hours=1),
        dns_names=dns_names,
        serial=leaf.serial_number,
    ).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    assert leaf.tbs_certificate_bytes == reference.tbs_certificate_bytes


@pytest.mark.parametrize(
    "leaf_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="ec-p384"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="rsa-2048"),
    ],
)
async def test_der_encoding_matches_the_builder_for_other_key_types(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, leaf_key: Any
) -> None:
    """Keys other than P-256 take the general SubjectKeyIdentifier path: same bytes."""
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=24))
    public_key = leaf_key().public_key()
    [leaf] = await mint_leaf(
        ca, spiffe_id=WORKLOAD, public_key=public_key, ttl=timedelta(hours=1), now=fake_clock.now()
    )
    reference = svid_builder(
        spiffe_id=WORKLOAD,
        public_key=public_key,
        issuer=ca.certificate,
        now=fake_clock.now(),
        ttl=timedelta(hours=1),
        serial=leaf.serial_number,
    ).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    assert leaf.tbs_certificate_bytes == reference.tbs_certificate_bytes


@pytest.mark.parametrize("dns_names", [(), ("web.example.org", "www.example.org")])
async def test_the_template_encodes_what_svid_tbs_encodes(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, dns_names: tuple[str, ...]
) -> None:
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=24))
    spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = fake_clock.now()
    serial = 0x80 << 120  # the top bit set: the INTEGER needs a leading zero octet
    expected = svid_tbs(
        serial=serial,
        signature_algorithm=ca.signature_algorithm_der,
        issuer=ca.subject_der,
        not_before=now,
        not_after=now + timedelta(hours=1),
        spki=spki,
        authority_key_id=ca.key_identifier,
        spiffe_id=str(WORKLOAD),
        dns_names=dns_names,
    )
    assert expected == ca.svid_template.tbs(
        serial=encode_integer(serial),
        validity=encode_validity(now, now + timedelta(hours=1)),
        names=leaf_names(str(WORKLOAD), dns_names),
        spki=spki,
    )


def test_random_serials_are_positive_distinct_and_at_most_128_bits() -> None:
    elements = random_serial_elements(200)
    values = []
    for element in elements:
        tag, start, end = read_tlv(element)
        assert tag == 0x02 and end == len(element)
        body = element[start:end]
        assert body[0] < 0x80 and (len(body) == 1 or body[0] or body[1] >= 0x80)
        values.append(int.from_bytes(body, "big"))
    assert all(0 < value < 2**128 for value in values)
    assert len(set(values)) == len(values)


async def test_a_batch_fails_item_by_item(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=2))
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    unsupported = ec.generate_private_key(ec.SECP521R1()).public_key()
    minted = await mint_x509_svids(
        ca,
        [
            LeafRequest(WORKLOAD, key, timedelta(minutes=10)),
            LeafRequest(TD.id, key, timedelta(minutes=10)),
            LeafRequest(WORKLOAD, unsupported, timedelta(minutes=10)),
            LeafRequest(WORKLOAD, key, timedelta(hours=1), ("web.example.org",)),
            LeafRequest(WORKLOAD, key, timedelta(hours=10)),
        ],
        now=fake_clock.now(),
    )
    first, trust_domain_id, bad_key, with_dns, capped = minted
    assert isinstance(trust_domain_id, InvalidArgumentError)
    assert "path" in str(trust_domain_id)
    assert isinstance(bad_key, InvalidArgumentError)
    assert "unsupported public key" in str(bad_key)
    leaves = []
    for result, lifetime in (
        (first, timedelta(minutes=10)),
        (with_dns, timedelta(hours=1)),
        (capped, timedelta(hours=2)),
    ):
        assert isinstance(result, MintedSvid)
        certificate = x509.load_der_x509_certificate(result.chain[0])
        certificate.verify_directly_issued_by(ca.certificate)
        assert certificate.not_valid_after_utc == fake_clock.now() + lifetime
        assert result.not_after == certificate.not_valid_after_utc
        leaves.append(certificate)
    assert len({certificate.serial_number for certificate in leaves}) == 3
    dns = extension(leaves[1], x509.SubjectAlternativeName).value
    assert dns.get_values_for_type(x509.DNSName) == ["web.example.org"]


def signed_csr(key: Any, algorithm: hashes.HashAlgorithm) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, algorithm)
        .public_bytes(serialization.Encoding.DER)
    )


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        pytest.param(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384(), id="p384-sha384"),
        pytest.param(ec.generate_private_key(ec.SECP256R1()), hashes.SHA512(), id="p256-sha512"),
        pytest.param(rsa.generate_private_key(65537, 2048), hashes.SHA256(), id="rsa-sha256"),
    ],
)
def test_csr_signatures_of_every_supported_kind_are_checked(
    key: Any, algorithm: hashes.HashAlgorithm
) -> None:
    der = signed_csr(key, algorithm)
    assert public_key_from_csr(der) == key.public_key()
    broken = bytearray(der)
    broken[-3] ^= 0x01
    with pytest.raises(InvalidArgumentError, match="CSR"):
        public_key_from_csr(bytes(broken))


def test_a_csr_signed_by_another_key_is_refused() -> None:
    """The signature must be the CSR's own key's: a valid signature by anyone else is not."""
    own = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    info, algorithm, _ = split_signed(signed_csr(own, hashes.SHA256()))
    forged = join_signed(info, algorithm, other.sign(info, ec.ECDSA(hashes.SHA256())))
    with pytest.raises(InvalidArgumentError, match="invalid CSR signature"):
        public_key_from_csr(forged)


def csr_with_point(key: ec.EllipticCurvePrivateKey, point: bytes) -> bytes:
    """A CSR for ``key`` whose SubjectPublicKeyInfo carries ``point`` (an encoding of the key's
    point), self-signed by ``key``."""
    algorithm_id = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")
    spki = encode_tlv(0x30, algorithm_id + encode_tlv(0x03, b"\x00" + point))
    info, algorithm, _ = split_signed(signed_csr(key, hashes.SHA256()))
    info = replace_csr_public_key(info, spki)
    return join_signed(info, algorithm, key.sign(info, ec.ECDSA(hashes.SHA256())))


def hybrid_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The point of ``key`` in the hybrid form (SEC 1: X and Y, the prefix telling Y's parity)."""
    numbers = key.public_key().public_numbers()
    return (
        bytes([0x06 | (numbers.y & 1)])
        + numbers.x.to_bytes(32, "big")
        + numbers.y.to_bytes(32, "big")
    )


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        pytest.param(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256(), id="p256"),
        pytest.param(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384(), id="p384"),
        pytest.param(rsa.generate_private_key(65537, 2048), hashes.SHA256(), id="rsa"),
    ],
)
def test_a_checked_csr_carries_its_key_encoded_as_cryptography_encodes_it(
    key: Any, algorithm: hashes.HashAlgorithm
) -> None:
    checked = checked_csr(signed_csr(key, algorithm))
    assert checked == CheckedKey.of(key.public_key())
    assert checked.spki == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    "point",
    [
        pytest.param(
            lambda key: key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            ),
            id="compressed",
        ),
        pytest.param(hybrid_point, id="hybrid"),
    ],
)
def test_a_p256_point_in_another_form_is_encoded_as_cryptography_encodes_it(
    point: Any,
) -> None:
    """A leaf carries the key as ``cryptography`` would write it, whatever form the CSR used."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = csr_with_point(key, point(key))
    try:
        checked = checked_csr(csr)
    except InvalidArgumentError:
        pytest.skip("this OpenSSL does not read the form")
    assert checked.spki == CheckedKey.of(key.public_key()).spki


def test_checking_a_key_refuses_a_type_no_svid_carries() -> None:
    with pytest.raises(InvalidArgumentError, match="unsupported public key"):
        CheckedKey.of(ec.generate_private_key(ec.SECP521R1()).public_key())


async def test_a_leaf_for_a_checked_csr_is_what_the_builder_makes(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    """A leaf given the CSR's key encoding is byte for byte the leaf encoded from the key."""
    ca = await make_ca(key_manager, fake_clock, timedelta(hours=2))
    key = ec.generate_private_key(ec.SECP256R1())
    checked = checked_csr(make_csr(key))
    given, encoded = await mint_x509_svids(
        ca,
        [
            LeafRequest(WORKLOAD, checked.public_key, timedelta(hours=1), spki=checked.spki),
            LeafRequest(WORKLOAD, key.public_key(), timedelta(hours=1)),
        ],
        now=fake_clock.now(),
    )
    assert isinstance(given, MintedSvid) and isinstance(encoded, MintedSvid)
    given_tbs, _, _ = split_signed(given.chain[0])
    encoded_tbs, _, _ = split_signed(encoded.chain[0])
    # Alike but for the serial: the second element of the TBSCertificate.
    assert without_serial(given_tbs) == without_serial(encoded_tbs)


def without_serial(tbs: bytes) -> bytes:
    _, start, _ = read_tlv(tbs)
    _, _, version_end = read_tlv(tbs, start)
    _, _, serial_end = read_tlv(tbs, version_end)
    return tbs[start:version_end] + tbs[serial_end:]


@pytest.mark.parametrize(
    ("path", "dns_names", "subject"),
    [
        ("/web", (), DEFAULT_SVID_SUBJECT),
        ("/" + "long/" * 40, (), DEFAULT_SVID_SUBJECT),
        ("/web", ("web.example.org", "www.example.org"), DEFAULT_SVID_SUBJECT),
        ("/web", (), (SubjectAttribute("2.5.4.10", "Example"),)),
    ],
)
def test_leaf_names_are_the_subject_and_the_san_cryptography_encodes(
    path: str, dns_names: tuple[str, ...], subject: tuple[SubjectAttribute, ...]
) -> None:
    spiffe_id = f"spiffe://example.org{path}"
    names, san_extension = leaf_names(spiffe_id, dns_names, subject)
    expected_names = x509.Name(
        [
            x509.NameAttribute(x509.ObjectIdentifier(attribute.oid), attribute.value)
            for attribute in subject
        ]
        + [x509.NameAttribute(NameOID.COMMON_NAME, name) for name in dns_names[:1]]
    )
    assert names == expected_names.public_bytes()
    san = x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(spiffe_id), *map(x509.DNSName, dns_names)]
    )
    assert san_extension == encode_tlv(
        0x30, encode_oid("2.5.29.17") + encode_tlv(0x04, san.public_bytes())
    )
