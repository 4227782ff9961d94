"""A small real PKI for the x509pop tests: CAs, intermediates and node certificates valid at the
fake clock's time, written as PEM files the way an operator provisions them."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pyspire_sdk.testing import FakeClock

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_key(kind: str) -> Key:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _usage(*, ca: bool, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: Key

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


class Pki:
    """Issues certificates valid around ``now`` and writes them under ``directory``."""

    def __init__(self, directory: Path, now: datetime) -> None:
        self.directory = directory
        self.now = now
        self.root = self.authority("root")
        self.intermediate = self.authority("intermediate", parent=self.root)

    def _build(
        self,
        subject: str,
        key: Key,
        issuer: Issued | None,
        *,
        ca: bool,
        digital_signature: bool = True,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        ips: Sequence[str] = (),
        uris: Sequence[str] = (),
        serial: int | None = None,
    ) -> Issued:
        name = (
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
            if subject
            else (x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nodes")]))
        )
        signer = issuer.key if issuer is not None else key
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer.certificate.subject if issuer is not None else name)
            .public_key(key.public_key())
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(not_before or self.now - timedelta(hours=1))
            .not_valid_after(not_after or self.now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_usage(ca=ca, digital_signature=digital_signature or ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.UniformResourceIdentifier(uri) for uri in uris]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(signer, hashes.SHA256()), key)

    def authority(self, name: str, *, parent: Issued | None = None) -> Issued:
        return self._build(name, new_key("ec"), parent, ca=True)

    def node(self, issuer: Issued | None = None, *, kind: str = "ec", **options: Any) -> Issued:
        options.setdefault("subject", "node1")
        subject = options.pop("subject")
        return self._build(subject, new_key(kind), issuer or self.intermediate, ca=False, **options)

    def write(self, name: str, *certificates: Issued) -> Path:
        path = self.directory / name
        path.write_bytes(b"".join(item.pem for item in certificates))
        return path

    def write_key(
        self,
        name: str,
        key: Key,
        fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    ) -> Path:
        path = self.directory / name
        path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        )
        return path


@pytest.fixture
def pki(tmp_path: Path, fake_clock: FakeClock) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    return Pki(directory, fake_clock.now())
