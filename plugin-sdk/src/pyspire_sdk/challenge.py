"""The wire of challenge/response node attestors: nonces and the JSON messages they travel in.

SPIRE's proof-of-possession attestors (``x509pop``, ``sshpop``, ``tpm_devid``) prove that the
agent holds a private key the same way, and ``http_challenge`` shares their nonces:

1. the server sends a fresh random nonce of :data:`NONCE_SIZE` bytes (:func:`new_nonce`);
2. the agent adds a nonce of its own, so it never signs bytes chosen by the server alone, and
   signs :func:`combined_digest` ``= SHA-256(server nonce || agent nonce)``;
3. the server checks the signature over the digest it computes from its own nonce, so an
   answer recorded from an earlier handshake never verifies again.

Payloads, challenges and answers are JSON objects as Go's ``encoding/json`` writes them:
compact, byte strings in standard base64 with padding, absent pointers as ``null``.
:func:`encode_message` writes them; :class:`JsonMessage` reads them without trusting them, with
errors that name the field (``challenge.rsa_signature.nonce``) and the reason. Field names
match exactly (Go also accepts other capitalizations; SPIRE's agents and servers write the
exact ones).
"""

from __future__ import annotations

__all__ = [
    "MAX_MESSAGE_BYTES",
    "NONCE_SIZE",
    "JsonMessage",
    "combined_digest",
    "encode_message",
    "new_nonce",
]

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from pyspire_sdk.errors import InvalidArgumentError

NONCE_SIZE = 32
"""Bytes in every nonce, the server's and the agent's (SPIRE's ``nonceLen``)."""

MAX_MESSAGE_BYTES = 256 * 1024
"""The largest payload, challenge or answer read: a chain of five 8192-bit RSA certificates in
base64 fits many times over; anything larger is refused before it is parsed."""


def new_nonce() -> bytes:
    """:data:`NONCE_SIZE` bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(NONCE_SIZE)


def combined_digest(server_nonce: bytes, agent_nonce: bytes) -> bytes:
    """``SHA-256(server_nonce || agent_nonce)``: the 32 bytes the agent signs (as a digest
    already hashed) and the server verifies.

    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the nonce that is not
    :data:`NONCE_SIZE` bytes long, so a short nonce cannot weaken the proof.
    """
    for name, nonce in (("server nonce", server_nonce), ("agent nonce", agent_nonce)):
        if len(nonce) != NONCE_SIZE:
            raise InvalidArgumentError(f"{name} is {len(nonce)} bytes long, expected {NONCE_SIZE}")
    return hashlib.sha256(server_nonce + agent_nonce).digest()


def _go_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): _go_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_go_json(item) for item in value]
    return value


def encode_message(fields: Mapping[str, Any]) -> bytes:
    """``fields`` as compact JSON, the way Go marshals the same struct: ``bytes`` become
    standard base64 strings (also inside lists and nested mappings), ``None`` becomes ``null``,
    keys keep their order."""
    return json.dumps(_go_json(fields), separators=(",", ":"), ensure_ascii=False).encode()


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


class JsonMessage:
    """One JSON object from the other half, read field by field.

    Every getter raises :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the field's
    path (``<what>.<field>``) when the field is missing, ``null`` where a value is required, or
    of the wrong type; the ``optional_*`` getters return ``None`` for a missing or ``null``
    field, as Go leaves a nil pointer or slice.
    """

    def __init__(self, fields: Mapping[str, Any], what: str) -> None:
        self._fields = fields
        self.what = what

    @classmethod
    def decode(cls, data: bytes, what: str) -> JsonMessage:
        """Parse ``data`` as one JSON object called ``what`` in errors (``payload``,
        ``challenge``, ``challenge response``); larger than :data:`MAX_MESSAGE_BYTES`, not
        UTF-8, not JSON or not an object is an error."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise InvalidArgumentError(
                f"{what} is {len(data)} bytes long, more than {MAX_MESSAGE_BYTES}"
            )
        try:
            document = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidArgumentError(f"{what} is not UTF-8 text") from None
        except (json.JSONDecodeError, RecursionError) as error:
            reason = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deep"
            raise InvalidArgumentError(f"{what} is not JSON: {reason}") from None
        if not isinstance(document, dict):
            raise InvalidArgumentError(f"{what} is {_kind(document)}, expected a JSON object")
        return cls(document, what)

    def _path(self, name: str) -> str:
        return f"{self.what}.{name}"

    def _value(self, name: str) -> Any:
        value = self._fields.get(name)
        if value is None:
            state = "null" if name in self._fields else "missing"
            raise InvalidArgumentError(f"{self._path(name)} is {state}")
        return value

    def _wrong(self, name: str, value: object, expected: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{self._path(name)} is {_kind(value)}, expected {expected}")

    def has(self, name: str) -> bool:
        """Whether ``name`` is present with a value other than ``null``."""
        return self._fields.get(name) is not None

    def text(self, name: str) -> str:
        """The string ``name``."""
        value = self._value(name)
        if not isinstance(value, str):
            raise self._wrong(name, value, "a string")
        return value

    def integer(self, name: str) -> int:
        """The integer ``name`` (a JSON number without a fraction)."""
        value = self._value(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, value, "an integer")
        return value

    def binary(self, name: str) -> bytes:
        """The byte string ``name``, written as standard base64 with padding."""
        return self._decode_base64(self._path(name), self._value(name))

    def optional_binary(self, name: str) -> bytes | None:
        """The byte string ``name``, or ``None`` when it is missing or ``null``."""
        return self.binary(name) if self.has(name) else None

    def binary_list(self, name: str) -> list[bytes]:
        """The array of byte strings ``name`` (``null`` reads as an empty array, as in Go)."""
        value = self._fields.get(name)
        if value is None:
            if name not in self._fields:
                raise InvalidArgumentError(f"{self._path(name)} is missing")
            return []
        if not isinstance(value, list):
            raise self._wrong(name, value, "an array")
        return [
            self._decode_base64(f"{self._path(name)}[{index}]", item)
            for index, item in enumerate(value)
        ]

    def optional_object(self, name: str) -> JsonMessage | None:
        """The object ``name``, or ``None`` when it is missing or ``null``."""
        if not self.has(name):
            return None
        value = self._fields[name]
        if not isinstance(value, dict):
            raise self._wrong(name, value, "an object")
        return JsonMessage(value, self._path(name))

    @staticmethod
    def _decode_base64(path: str, value: object) -> bytes:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{path} is {_kind(value)}, expected a base64 string")
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise InvalidArgumentError(f"{path} is not standard base64") from None
