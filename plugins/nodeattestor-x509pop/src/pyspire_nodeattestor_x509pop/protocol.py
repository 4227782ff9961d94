"""SPIRE's x509pop messages and the proof of possession they carry.

- Payload (agent → server): ``{"certificates":["<base64 DER>", ...]}``, the agent's
  certificate first, then intermediates.
- Challenge (server → agent): ``{"rsa_signature":{"nonce":"<base64>"},"ecdsa_signature":null}``
  for an RSA certificate, ``{"rsa_signature":null,"ecdsa_signature":{"nonce":...}}`` for an
  ECDSA one; the nonce is 32 random bytes.
- Answer (agent → server): the agent adds its own 32-byte nonce and signs
  ``SHA-256(server nonce || agent nonce)`` as a SHA-256 digest: RSA-PSS (MGF1 SHA-256, the
  longest salt; the server accepts any salt length) as
  ``{"rsa_signature":{"nonce":...,"signature":...},"ecdsa_signature":null}``, or ECDSA as
  ``{"rsa_signature":null,"ecdsa_signature":{"nonce":...,"r":...,"s":...}}`` with ``r`` and
  ``s`` big-endian without leading zeros.

Byte fields are standard base64 (Go's encoding of ``[]byte``), so SPIRE's agents and servers
read these messages and we read theirs.
"""

from __future__ import annotations

__all__ = [
    "PrivateKey",
    "PublicKey",
    "answer_challenge",
    "decode_payload",
    "encode_payload",
    "new_challenge",
    "verify_answer",
]

from collections.abc import Sequence
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from pyspire_sdk.challenge import JsonMessage, combined_digest, encode_message, new_nonce
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_RSA = "rsa_signature"
_ECDSA = "ecdsa_signature"
_MAX_INTEGER_BYTES = 66
"""The longest ``r`` or ``s`` of any supported curve (P-521)."""

_PREHASHED = utils.Prehashed(hashes.SHA256())
_ECDSA_PREHASHED = ec.ECDSA(_PREHASHED)
_PSS_SIGN = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
_PSS_VERIFY = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)


def encode_payload(chain: Sequence[bytes]) -> bytes:
    """The attestation payload for ``chain`` (DER, leaf first)."""
    return encode_message({"certificates": list(chain)})


def decode_payload(payload: bytes) -> list[bytes]:
    """The DER certificates of a payload, leaf first; InvalidArgumentError when malformed."""
    certificates = JsonMessage.decode(payload, "payload").binary_list("certificates")
    if not certificates:
        raise InvalidArgumentError("payload.certificates is empty: no certificate to attest")
    return certificates


def _kind(key: PublicKey | PrivateKey) -> str:
    return _RSA if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) else _ECDSA


def new_challenge(public_key: PublicKey) -> tuple[bytes, bytes]:
    """A challenge for the holder of ``public_key``'s private half: (message, server nonce)."""
    nonce = new_nonce()
    kind = _kind(public_key)
    return encode_message({_RSA: None, _ECDSA: None, kind: {"nonce": nonce}}), nonce


def _integer(value: bytes, path: str) -> int:
    if len(value) > _MAX_INTEGER_BYTES:
        raise InvalidArgumentError(f"{path} is {len(value)} bytes long, more than any curve needs")
    return int.from_bytes(value, "big")


def verify_answer(public_key: PublicKey, server_nonce: bytes, answer: bytes) -> None:
    """Check ``answer`` proves possession of ``public_key``'s private half for the challenge
    with ``server_nonce``.

    A malformed answer raises :class:`~pyspire_sdk.errors.InvalidArgumentError`; a well-formed
    one that does not prove possession (the other key type, a nonce of the wrong size, a
    signature that does not verify) raises :class:`~pyspire_sdk.errors.PermissionDeniedError`.
    """
    message = JsonMessage.decode(answer, "challenge response")
    kind = _kind(public_key)
    signed = message.optional_object(kind)
    if signed is None:
        raise PermissionDeniedError(
            f"challenge response verification failed: expected {kind} for the certificate's "
            f"{'RSA' if kind == _RSA else 'ECDSA'} key"
        )
    agent_nonce = signed.binary("nonce")
    try:
        digest = combined_digest(server_nonce, agent_nonce)
    except InvalidArgumentError as error:
        raise PermissionDeniedError(f"challenge response verification failed: {error}") from None
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signed.binary("signature"), digest, _PSS_VERIFY, _PREHASHED)
        else:
            r = _integer(signed.binary("r"), f"{signed.what}.r")
            s = _integer(signed.binary("s"), f"{signed.what}.s")
            signature = utils.encode_dss_signature(r, s)
            public_key.verify(signature, digest, _ECDSA_PREHASHED)
    except InvalidSignature:
        raise PermissionDeniedError(
            f"challenge response verification failed: the {kind.split('_')[0].upper()} "
            "signature does not verify with the certificate's key"
        ) from None


def _minimal_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def answer_challenge(private_key: PrivateKey, challenge: bytes) -> bytes:
    """The answer to ``challenge`` made with ``private_key``: CPU work, worth a thread.

    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` for a challenge that is malformed
    or for the other key type.
    """
    message = JsonMessage.decode(challenge, "challenge")
    kind = _kind(private_key)
    asked = message.optional_object(kind)
    if asked is None:
        raise InvalidArgumentError(f"challenge has no {kind} for this node's key")
    agent_nonce = new_nonce()
    digest = combined_digest(asked.binary("nonce"), agent_nonce)
    if isinstance(private_key, rsa.RSAPrivateKey):
        signature = private_key.sign(digest, _PSS_SIGN, _PREHASHED)
        return encode_message({_RSA: {"nonce": agent_nonce, "signature": signature}, _ECDSA: None})
    r, s = utils.decode_dss_signature(private_key.sign(digest, _ECDSA_PREHASHED))
    proof = {"nonce": agent_nonce, "r": _minimal_bytes(r), "s": _minimal_bytes(s)}
    return encode_message({_RSA: None, _ECDSA: proof})
