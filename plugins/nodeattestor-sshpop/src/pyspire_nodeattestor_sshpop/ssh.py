"""The parts of SSH that sshpop needs, on ``cryptography``'s SSH support: certificates and keys
in wire form, and signatures as SSH makes them (RFC 4253, 5656, 8332, 8709).

Keys: Ed25519, ECDSA (NIST P-256, P-384, P-521) and RSA. An RSA signature is made with
``rsa-sha2-256``; ``rsa-sha2-512`` and SHA-1 ``ssh-rsa`` (what Go's SSH library, and so a SPIRE
agent, makes by default) verify too.
"""

from __future__ import annotations

__all__ = [
    "Signature",
    "certificate_from_blob",
    "fingerprint",
    "key_blob",
    "parse_authorities",
    "sign",
    "verify",
]

import base64
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError

SshPublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
SshPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_CURVE_HASHES: dict[str, hashes.HashAlgorithm] = {
    "secp256r1": hashes.SHA256(),
    "secp384r1": hashes.SHA384(),
    "secp521r1": hashes.SHA512(),
}
_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
    # SHA-1: what a SPIRE agent with an RSA host key signs with (Go's default); it signs
    # digests of fresh nonces, which no collision attack reaches.
    "ssh-rsa": hashes.SHA1(),  # noqa: S303
}
_ECDSA_NAMES = {"secp256r1": "nistp256", "secp384r1": "nistp384", "secp521r1": "nistp521"}


def _string(data: bytes, offset: int, what: str) -> tuple[bytes, int]:
    """One SSH ``string`` (uint32 length, then bytes) at ``offset``; the value and the end."""
    if offset + 4 > len(data):
        raise InvalidArgumentError(f"{what} is truncated")
    (length,) = struct.unpack_from(">I", data, offset)
    end = offset + 4 + length
    if end > len(data):
        raise InvalidArgumentError(f"{what} is truncated")
    return data[offset + 4 : end], end


def _ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return _ssh_string(raw)


def certificate_from_blob(blob: bytes) -> serialization.SSHCertificate:
    """The SSH certificate whose wire form is ``blob`` (what Go's ``cert.Marshal`` writes);
    InvalidArgumentError when it is no certificate of a supported key type."""
    kind, _ = _string(blob, 0, "the certificate")
    if not kind.endswith(b"-cert-v01@openssh.com"):
        raise InvalidArgumentError(
            f"the key is of type {kind.decode('ascii', 'replace')!r}, not an SSH certificate"
        )
    line = kind + b" " + base64.b64encode(blob)
    try:
        return serialization.load_ssh_public_identity(line)  # type: ignore[return-value]
    except (ValueError, UnsupportedAlgorithm) as error:
        raise InvalidArgumentError(f"the SSH certificate does not parse: {error}") from None


def key_blob(key: SshPublicKey | serialization.SSHCertificate) -> bytes:
    """The wire form of a public key or certificate."""
    if isinstance(key, serialization.SSHCertificate):
        line = key.public_bytes()
    else:
        line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def fingerprint(blob: bytes) -> str:
    """SPIRE's sshpop fingerprint: SHA-256 of the wire form, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode("ascii")


def parse_authorities(lines: Iterable[str], source: str) -> list[bytes]:
    """The wire forms of the CA keys in ``authorized_keys``-style lines (``<type> <base64>
    [comment]``, optionally after options); blank and ``#`` lines are skipped. An unreadable
    line is an InvalidArgumentError naming ``source`` and the line's number."""
    found: list[bytes] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        for index, word in enumerate(words[:-1]):
            try:
                key = serialization.load_ssh_public_key(f"{word} {words[index + 1]}".encode())
            except (ValueError, UnsupportedAlgorithm):
                continue
            found.append(key_blob(key))  # type: ignore[arg-type]
            break
        else:
            raise InvalidArgumentError(f"{source}, line {number}: no SSH public key found")
    return found


@dataclass(frozen=True)
class Signature:
    """An SSH signature: its algorithm name and blob (Go's ``ssh.Signature``; ``rest`` is
    carried but never set by OpenSSH or Go for these algorithms)."""

    format: str
    blob: bytes
    rest: bytes | None = None


def sign(key: SshPrivateKey, data: bytes) -> Signature:
    """Sign ``data`` as an SSH client or host signs: CPU work, worth a thread."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Signature("ssh-ed25519", key.sign(data))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        hash_algorithm = _CURVE_HASHES[key.curve.name]
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hash_algorithm)))
        return Signature(f"ecdsa-sha2-{_ECDSA_NAMES[key.curve.name]}", _mpint(r) + _mpint(s))
    return Signature("rsa-sha2-256", key.sign(data, padding.PKCS1v15(), hashes.SHA256()))


def _format_mismatch(signature: Signature, expected: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"signature of type {signature.format!r} does not fit the certificate's {expected} key"
    )


def verify(key: SshPublicKey, data: bytes, signature: Signature) -> None:
    """Check ``signature`` over ``data`` with ``key``; PermissionDeniedError when it does not
    verify or does not fit the key."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if signature.format != "ssh-ed25519":
                raise _format_mismatch(signature, "Ed25519")
            key.verify(signature.blob, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            name = _ECDSA_NAMES.get(key.curve.name, "")
            if signature.format != f"ecdsa-sha2-{name}":
                raise _format_mismatch(signature, f"ECDSA {name}")
            try:
                r_bytes, end = _string(signature.blob, 0, "the ECDSA signature")
                s_bytes, end = _string(signature.blob, end, "the ECDSA signature")
            except InvalidArgumentError as error:
                raise PermissionDeniedError(str(error)) from None
            r, s = int.from_bytes(r_bytes, "big"), int.from_bytes(s_bytes, "big")
            der = utils.encode_dss_signature(r, s)
            key.verify(der, data, ec.ECDSA(_CURVE_HASHES[key.curve.name]))
        else:
            hash_algorithm = _RSA_HASHES.get(signature.format)
            if hash_algorithm is None:
                raise _format_mismatch(signature, "RSA")
            key.verify(signature.blob, data, padding.PKCS1v15(), hash_algorithm)
    except InvalidSignature:
        raise PermissionDeniedError(
            f"the {signature.format} signature does not verify with the certificate's key"
        ) from None
