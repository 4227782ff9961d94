"""The one error a protobuf decoder of this project raises for bytes it cannot accept."""

from __future__ import annotations

__all__ = ["DecodeError"]

from pyspire_sdk.errors import InvalidArgumentError


class DecodeError(InvalidArgumentError):
    """The bytes are not a valid encoding of the message being read.

    An :class:`~pyspire_sdk.errors.InvalidArgumentError`, so a malformed request becomes
    INVALID_ARGUMENT like any other bad input. ``field`` is the full protobuf name of the field
    (``spire.api.types.Entry.hint``) or, when no single field is at fault, of the message;
    ``reason`` says what is wrong (``not valid UTF-8``, ``truncated``, ...).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"malformed {field}: {reason}")
        self.field = field
        self.reason = reason
