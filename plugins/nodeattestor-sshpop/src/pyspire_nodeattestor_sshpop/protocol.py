"""SPIRE's sshpop messages, JSON as Go writes its untagged structs (capitalized field names,
byte strings in standard base64):

- Payload (agent → server): ``{"Certificate":"<base64 of the certificate's wire form>"}``.
- Challenge (server → agent): ``{"Nonce":"<base64 of 32 random bytes>"}``.
- Answer (agent → server): ``{"Nonce":"<base64 of the agent's 32 bytes>","Signature":
  {"Format":"ssh-ed25519","Blob":"<base64>","Rest":null}}``, the host key's SSH signature of
  ``SHA-256(server nonce || agent nonce)``.
"""

from __future__ import annotations

__all__ = [
    "decode_answer",
    "decode_challenge",
    "decode_payload",
    "encode_answer",
    "encode_challenge",
    "encode_payload",
]

from pyspire_nodeattestor_sshpop.ssh import Signature
from pyspire_sdk.challenge import JsonMessage, encode_message
from pyspire_sdk.errors import InvalidArgumentError


def encode_payload(certificate_blob: bytes) -> bytes:
    """The attestation payload carrying the host certificate."""
    return encode_message({"Certificate": certificate_blob})


def decode_payload(payload: bytes) -> bytes:
    """The certificate's wire form; InvalidArgumentError when absent or malformed."""
    blob = JsonMessage.decode(payload, "payload").optional_binary("Certificate")
    if not blob:
        raise InvalidArgumentError("payload.Certificate is missing: no certificate in the payload")
    return blob


def encode_challenge(nonce: bytes) -> bytes:
    """The server's challenge."""
    return encode_message({"Nonce": nonce})


def decode_challenge(challenge: bytes) -> bytes:
    """The server's nonce (its size is checked when the nonces are combined)."""
    return JsonMessage.decode(challenge, "challenge").binary("Nonce")


def encode_answer(nonce: bytes, signature: Signature) -> bytes:
    """The agent's answer: its nonce and the signature."""
    return encode_message(
        {
            "Nonce": nonce,
            "Signature": {
                "Format": signature.format,
                "Blob": signature.blob,
                "Rest": signature.rest,
            },
        }
    )


def decode_answer(answer: bytes) -> tuple[bytes, Signature]:
    """The agent's nonce and signature; InvalidArgumentError naming a malformed field."""
    message = JsonMessage.decode(answer, "challenge response")
    nonce = message.binary("Nonce")
    signed = message.optional_object("Signature")
    if signed is None:
        raise InvalidArgumentError("challenge response.Signature is missing")
    return nonce, Signature(
        format=signed.text("Format"),
        blob=signed.binary("Blob"),
        rest=signed.optional_binary("Rest"),
    )
