"""How grpclib carries messages the generated codecs read and write.

grpclib encodes a message by checking it is an instance of the method's declared type and
calling its ``SerializeToString()``, and decodes one by calling the declared type's
``FromString(data)``. The codec classes (``pyspire.proto.gen.codec``) have both, so a method
routed through :func:`unary_route`, :func:`server_stream_route` or :func:`stream_route`
receives codec messages, and its replies, written by the codecs (often from cached
encodings), are :class:`EncodedMessage` bytes sent as they are.
"""

from __future__ import annotations

__all__ = [
    "EncodedMessage",
    "call_unary",
    "server_stream_route",
    "stream_route",
    "unary_route",
]

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import grpclib.client
import grpclib.const
import grpclib.exceptions
import grpclib.server

from pyspire_sdk.errors import InvalidArgumentError

_M = TypeVar("_M")
_Request = TypeVar("_Request")


class EncodedMessage(Generic[_M]):
    """A message that is already its wire bytes.

    Declared as a method's reply type, it is sent as is (``SerializeToString``); declared as a
    request or reply type, the bytes arrive undecoded (``FromString``) for a codec to read.
    ``decoder`` (the codec's ``decode_<Message>``) lets a caller in the process read what it
    holds with :meth:`decode`. ``metadata``, on the first reply a :func:`stream_route` handler
    yields, goes out as the call's initial metadata (ignored on later replies).
    """

    __slots__ = ("_decoder", "data", "metadata")

    def __init__(
        self,
        data: bytes,
        decoder: Callable[[bytes], _M] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.data = data
        self._decoder = decoder
        self.metadata = metadata

    def SerializeToString(self) -> bytes:  # noqa: N802 - the name grpclib calls
        """The wire bytes."""
        return self.data

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def FromString(cls, data: bytes) -> EncodedMessage[Any]:  # noqa: N802 - the name grpclib calls
        """Keep the received bytes."""
        return cls(bytes(data))

    def decode(self) -> _M:
        """The message these bytes hold, read by the codec given at construction."""
        if self._decoder is None:
            raise TypeError("this encoded message was made without a decoder")
        return self._decoder(self.data)


def unary_route(
    method: Callable[[_Request], Awaitable[Any]], request_type: type[_Request]
) -> grpclib.const.Handler:
    """A unary-unary gRPC handler that reads ``request_type`` (a codec class), awaits
    ``method`` with it and sends the reply it returns (an :class:`EncodedMessage`)."""

    async def handle(stream: grpclib.server.Stream[_Request, Any]) -> None:
        request = await stream.recv_message()
        if request is None:  # the request guard refuses such a call before it gets here
            raise InvalidArgumentError("missing request message")
        await stream.send_message(await method(request))

    return grpclib.const.Handler(
        handle, grpclib.const.Cardinality.UNARY_UNARY, request_type, EncodedMessage
    )


def server_stream_route(
    method: Callable[[_Request], AsyncIterator[Any]], request_type: type[_Request]
) -> grpclib.const.Handler:
    """A unary-streaming gRPC handler: reads one ``request_type`` message (a codec class) and
    sends every reply ``method`` yields for it (:class:`EncodedMessage`)."""

    async def handle(stream: grpclib.server.Stream[_Request, Any]) -> None:
        request = await stream.recv_message()
        if request is None:  # the request guard refuses such a call before it gets here
            raise InvalidArgumentError("missing request message")
        async for reply in method(request):
            await stream.send_message(reply)

    return grpclib.const.Handler(
        handle, grpclib.const.Cardinality.UNARY_STREAM, request_type, EncodedMessage
    )


def stream_route(
    method: Callable[[AsyncIterator[_Request]], AsyncIterator[Any]],
    request_type: type[_Request],
) -> grpclib.const.Handler:
    """A bidirectional-streaming gRPC handler: ``method`` reads the request stream (codec
    messages of ``request_type``) and yields the replies (:class:`EncodedMessage`); the first
    reply's ``metadata`` is sent as the initial metadata."""

    async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
        first = True
        async for reply in method(stream.__aiter__()):
            if first:
                first = False
                metadata = getattr(reply, "metadata", None)
                if metadata:
                    await stream.send_initial_metadata(metadata=metadata)
            await stream.send_message(reply)

    return grpclib.const.Handler(
        handle, grpclib.const.Cardinality.STREAM_STREAM, request_type, EncodedMessage
    )


async def call_unary(
    channel: grpclib.client.Channel,
    method: str,
    request: Any,
    decode: Callable[[bytes], _M],
    *,
    call_timeout: float | None = None,
) -> _M:
    """Call the unary ``method`` (its gRPC path) with ``request`` (a codec message or an
    :class:`EncodedMessage`) and return the reply read by ``decode`` (a codec's
    ``decode_<Message>``), within ``call_timeout`` seconds; a failed call raises grpclib's
    ``GRPCError``."""
    async with channel.request(
        method,
        grpclib.const.Cardinality.UNARY_UNARY,
        type(request),
        EncodedMessage,
        timeout=call_timeout,
    ) as stream:
        await stream.send_message(request, end=True)
        reply = await stream.recv_message()
    if reply is None:
        raise grpclib.exceptions.GRPCError(
            grpclib.const.Status.UNKNOWN, f"the server ended {method} without an answer"
        )
    return decode(reply.data)
