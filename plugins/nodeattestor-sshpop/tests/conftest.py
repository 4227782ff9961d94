"""SSH certificate authorities and host certificates for the sshpop tests, valid around the fake
clock's time and written the way ``ssh-keygen`` writes them."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyspire_sdk.testing import FakeClock

Key = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_key(kind: str) -> Key:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


@dataclass(frozen=True)
class Host:
    key: Key
    certificate: serialization.SSHCertificate
    key_path: Path
    cert_path: Path

    @property
    def blob(self) -> bytes:
        return base64.b64decode(self.certificate.public_bytes().split()[1])


class SshPki:
    """One certificate authority (``ca``) that signs host certificates valid around ``now``."""

    def __init__(self, directory: Path, now: datetime) -> None:
        self.directory = directory
        self.now = now
        self.ca = new_key("ed25519")

    @staticmethod
    def new_key(kind: str) -> Key:
        return new_key(kind)

    def ca_line(self, key: Key | None = None, comment: str = "ca@example.org") -> str:
        """The CA's public key as an ``authorized_keys`` line."""
        line = (
            (key or self.ca)
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
        return f"{line.decode()} {comment}"

    def host(
        self,
        *,
        kind: str = "ed25519",
        ca: Key | None = None,
        principals: Sequence[str] = ("node1.example.org",),
        cert_type: serialization.SSHCertificateType = serialization.SSHCertificateType.HOST,
        valid_after: datetime | None = None,
        valid_before: datetime | None = None,
        critical_options: Sequence[tuple[bytes, bytes]] = (),
        name: str = "host",
    ) -> Host:
        key = new_key(kind)
        builder = (
            serialization.SSHCertificateBuilder()
            .public_key(key.public_key())
            .serial(7)
            .type(cert_type)
            .key_id(b"node1-key")
            .valid_after(int((valid_after or self.now - timedelta(hours=1)).timestamp()))
            .valid_before(int((valid_before or self.now + timedelta(days=1)).timestamp()))
        )
        if principals:
            builder = builder.valid_principals([p.encode() for p in principals])
        else:
            builder = builder.valid_for_all_principals()
        for option, value in critical_options:
            builder = builder.add_critical_option(option, value)
        certificate = builder.sign(ca or self.ca)
        key_path = self.directory / name
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        cert_path = self.directory / f"{name}-cert.pub"
        cert_path.write_bytes(certificate.public_bytes() + b" " + name.encode() + b"\n")
        return Host(key=key, certificate=certificate, key_path=key_path, cert_path=cert_path)


@pytest.fixture
def ssh_pki(tmp_path: Path, fake_clock: FakeClock) -> SshPki:
    directory = tmp_path / "ssh"
    directory.mkdir()
    return SshPki(directory, fake_clock.now())
