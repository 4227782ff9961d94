"""Certificates and requests signed through a key manager verify like in-process ones."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from pyspire.ca.signing import ManagedKey, sign_certificate, sign_csr
from pyspire.ca.templates import CaSubject, ca_builder, ca_csr_builder
from pyspire_sdk.keys import InProcessKeyManager
from pyspire_sdk.plugins.key_manager import KeyType
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock

TD = TrustDomain("example.org")


async def managed(key_manager: InProcessKeyManager, key_type: KeyType) -> ManagedKey:
    return ManagedKey(key_manager, await key_manager.generate_key(f"k-{key_type}", key_type))


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
async def test_remotely_signed_ca_verifies_with_cryptography_and_openssl(
    key_manager: InProcessKeyManager, fake_clock: FakeClock, tmp_path: Path, key_type: KeyType
) -> None:
    key = await managed(key_manager, key_type)
    builder = ca_builder(
        trust_domain=TD,
        template=CaSubject().ca_template(timedelta(hours=24)),
        public_key=key.load_public_key(),  # type: ignore[arg-type]
        now=fake_clock.now(),
    )
    certificate = await sign_certificate(builder, key)
    certificate.verify_directly_issued_by(certificate)
    held = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert held == key.public_key.der
    pem = tmp_path / "ca.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    attime = str(int(fake_clock.now().timestamp()) + 60)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-attime", attime, "-CAfile", pem, pem],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_signature_from_another_key_does_not_verify(
    key_manager: InProcessKeyManager, fake_clock: FakeClock
) -> None:
    """A certificate naming key A but signed by key B must fail: the signature really is the
    managed key's, not the throwaway's or anyone else's."""
    key_a = await managed(key_manager, KeyType.EC_P256)
    key_b = ManagedKey(key_manager, await key_manager.generate_key("b", KeyType.EC_P256))
    builder = ca_builder(
        trust_domain=TD,
        template=CaSubject().ca_template(timedelta(hours=1)),
        public_key=key_a.load_public_key(),  # type: ignore[arg-type]
        now=fake_clock.now(),
    )
    mismatched = await sign_certificate(builder, key_b)
    with pytest.raises(InvalidSignature):
        mismatched.verify_directly_issued_by(mismatched)


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048])
async def test_csr_carries_the_managed_key_and_a_valid_signature(
    key_manager: InProcessKeyManager, key_type: KeyType
) -> None:
    key = await managed(key_manager, key_type)
    csr = x509.load_der_x509_csr(
        await sign_csr(
            ca_csr_builder(trust_domain=TD, template=CaSubject().ca_template(timedelta(hours=1))),
            key,
        )
    )
    assert csr.is_signature_valid
    held = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert held == key.public_key.der
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
