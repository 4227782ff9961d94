"""Reply messages whose wire bytes were assembled beforehand.

betterproto costs tens to hundreds of microseconds to encode a message, so hot replies (an
agent's authorized entries, a batch of SVIDs, a workload's X509-SVID response) are encoded once
or by hand and sent as bytes. grpclib encodes a reply by checking it is an instance of the reply
type and calling ``SerializeToString()``: a subclass of the generated type that returns stored
bytes passes both. Each use has a test that its bytes equal betterproto's own encoding.
"""

from __future__ import annotations

from typing import Any, ClassVar

import betterproto


def field_metadata(message_type: Any) -> Any:
    """betterproto's field metadata of a generated message class, for a subclass to reuse (it
    adds no fields, and betterproto could not resolve the generated module's type hints from
    the subclass's module)."""
    return message_type._betterproto


class PrebuiltMessage:
    """Mixed into a subclass of a generated reply type: serializes to the bytes given at
    construction. The generated fields stay empty; :meth:`decode` parses the bytes into an
    ordinary message of the reply type (``_plain``)."""

    _plain: ClassVar[type[betterproto.Message]]

    def __init__(self, data: bytes) -> None:
        super().__init__()
        # Stored beside the message fields, so betterproto's bookkeeping ignores it.
        self.__dict__["_prebuilt"] = data

    def __bytes__(self) -> bytes:
        data: bytes = self.__dict__["_prebuilt"]
        return data

    def SerializeToString(self) -> bytes:  # noqa: N802 - the name grpclib calls
        """The prebuilt wire bytes."""
        return self.__bytes__()

    def __len__(self) -> int:
        return len(self.__bytes__())

    def decode(self) -> Any:
        """The message these bytes encode, as an ordinary instance of the reply type."""
        return self._plain().parse(self.__bytes__())


class EncodedMessage:
    """A message that is already its wire bytes, for grpclib: declared as a handler's reply
    type, it is sent as is (``SerializeToString``); declared as a request or reply type, the
    bytes arrive undecoded (``FromString``) for a generated codec to read."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 - the name grpclib calls
        """The wire bytes."""
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> EncodedMessage:  # noqa: N802 - the name grpclib calls
        """Keep the received bytes."""
        return cls(bytes(data))
