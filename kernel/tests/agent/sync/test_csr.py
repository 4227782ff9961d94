"""The agent's CSRs (for workload SVIDs and for its own): what ``cryptography``'s builder makes,
for less, and accepted by the server's CSR check and by OpenSSL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from pyspire.agent.csr import agent_csr, workload_csr
from pyspire.ca.x509svid import checked_csr
from pyspire.der import split_signed
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugins.key_manager import KeyType

SPIFFE_ID = "spiffe://example.org/workload/web"


def _keys() -> list[CertificateIssuerPrivateKeyTypes]:
    return [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ]


KEYS = _keys()
KEY_NAMES = ["ec-p256", "ec-p384", "rsa-2048"]


def _built(key: CertificateIssuerPrivateKeyTypes, spiffe_id: str) -> bytes:
    """The CSR as the agent made it with ``cryptography``'s builder."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


@pytest.mark.parametrize("key", KEYS, ids=KEY_NAMES)
def test_the_request_is_what_the_builder_makes(key: CertificateIssuerPrivateKeyTypes) -> None:
    made = workload_csr(key, SPIFFE_ID)
    built_info, built_algorithm, _ = split_signed(_built(key, SPIFFE_ID))
    info, algorithm, _ = split_signed(made.der)
    assert (info, algorithm) == (built_info, built_algorithm)
    if isinstance(key, rsa.RSAPrivateKey):  # PKCS#1 v1.5 signatures are deterministic
        assert made.der == _built(key, SPIFFE_ID)


@pytest.mark.parametrize("key", KEYS, ids=KEY_NAMES)
def test_the_request_is_a_valid_pkcs10_for_the_key(key: CertificateIssuerPrivateKeyTypes) -> None:
    made = workload_csr(key, SPIFFE_ID)
    csr = x509.load_der_x509_csr(made.der)
    assert csr.is_signature_valid
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == "sha256"
    assert csr.subject == x509.Name([])
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE_ID]
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert made.public_key_info == spki
    # What the server takes from it.
    assert checked_csr(made.der).spki == spki


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
@pytest.mark.parametrize("key", KEYS, ids=KEY_NAMES)
def test_openssl_verifies_the_request(
    key: CertificateIssuerPrivateKeyTypes, tmp_path: Path
) -> None:
    path = tmp_path / "request.der"
    path.write_bytes(workload_csr(key, SPIFFE_ID).der)
    verified = subprocess.run(
        ["openssl", "req", "-inform", "DER", "-in", str(path), "-verify", "-noout", "-text"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert "verify OK" in verified.stdout + verified.stderr
    assert f"URI:{SPIFFE_ID}" in verified.stdout


def test_a_tampered_request_does_not_verify() -> None:
    made = workload_csr(KEYS[0], SPIFFE_ID)
    tampered = made.der.replace(b"web", b"wab")
    assert not x509.load_der_x509_csr(tampered).is_signature_valid
    with pytest.raises(InvalidArgumentError, match="invalid CSR signature"):
        checked_csr(tampered)


def test_long_spiffe_ids_are_encoded_with_long_lengths() -> None:
    spiffe_id = "spiffe://example.org/" + "a" * 300
    made = workload_csr(KEYS[0], spiffe_id)
    assert split_signed(made.der)[0] == split_signed(_built(KEYS[0], spiffe_id))[0]
    assert x509.load_der_x509_csr(made.der).is_signature_valid


def test_other_keys_and_non_ascii_ids_are_refused_by_name() -> None:
    with pytest.raises(InvalidArgumentError, match="private_key must be an EC or RSA key"):
        workload_csr(ed25519.Ed25519PrivateKey.generate(), SPIFFE_ID)
    with pytest.raises(InvalidArgumentError, match=r"spiffe_id .* is not ASCII"):
        workload_csr(KEYS[0], "spiffe://example.org/caf\u00e9")


AGENT_KEY_TYPES = [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048]


def _built_for_agent(key: CertificateIssuerPrivateKeyTypes, key_type: KeyType) -> bytes:
    """The agent's own CSR as it was made with ``cryptography``'s builder (SPIRE's shape)."""
    algorithm = hashes.SHA384() if key_type is KeyType.EC_P384 else hashes.SHA256()
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "SPIRE")]))
        .sign(key, algorithm)
        .public_bytes(serialization.Encoding.DER)
    )


@pytest.mark.parametrize(
    ("key", "key_type"), list(zip(KEYS, AGENT_KEY_TYPES, strict=True)), ids=KEY_NAMES
)
def test_the_agent_request_is_what_the_builder_makes(
    key: CertificateIssuerPrivateKeyTypes, key_type: KeyType
) -> None:
    made = agent_csr(key, key_type)
    built = _built_for_agent(key, key_type)
    assert split_signed(made)[:2] == split_signed(built)[:2]
    if key_type.is_rsa:  # PKCS#1 v1.5 signatures are deterministic
        assert made == built
    csr = x509.load_der_x509_csr(made)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "O=SPIRE"
    assert checked_csr(made).spki == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_an_agent_key_of_another_type_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgumentError, match="private_key must be a key of type 'rsa-2048'"):
        agent_csr(KEYS[0], KeyType.RSA_2048)
    with pytest.raises(InvalidArgumentError, match="private_key must be a key of type 'ec-p256'"):
        agent_csr(KEYS[2], KeyType.EC_P256)
    with pytest.raises(InvalidArgumentError, match="private_key must be a key of type 'ec-p256'"):
        agent_csr(ed25519.Ed25519PrivateKey.generate(), KeyType.EC_P256)  # type: ignore[arg-type]
