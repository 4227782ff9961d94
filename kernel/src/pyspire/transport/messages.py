"""Reading request messages off a gRPC stream without trusting the peer.

grpclib reads a request as a 5-byte prefix (compressed flag, big-endian length) followed by that
many bytes, then hands them to the request type's ``FromString``. Every way that can go wrong on
purpose or by accident is answered here, in one place, before a handler sees the message:

- a prefix with the compressed flag set (we never announce a ``grpc-encoding``), or a flag that
  is neither 0 nor 1;
- a stream that ends inside the prefix or before the announced length arrived;
- a unary call that ends without any message;
- bytes that are not a message of the expected type (random bytes, truncated fields, invalid
  UTF-8 in a string field, a wrong wire type).

Each of these is a :class:`MalformedRequestError`: INVALID_ARGUMENT with a one-line reason, where
grpclib itself would answer UNKNOWN "Internal Server Error" and log a traceback. A message longer
than the server accepts is refused with RESOURCE_EXHAUSTED before it is read, and a first request
message that has not arrived in full within the allowed time (a peer holding the call open by
sending nothing, or its bytes one by one) with DEADLINE_EXCEEDED, which also resets the HTTP/2
stream so that it holds nothing more on the server.

The prefix and the body are read through the HTTP/2 stream's ``recv_data``; wrapping it on the
stream is the only place grpclib lets us look at them first. This is the one use of that private
attribute: a grpclib upgrade that moves it fails loudly here (and in this module's tests).
"""

from __future__ import annotations

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MalformedRequestError",
    "checked_request_type",
    "guard_request_frames",
]

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import grpclib.const
import grpclib.server
from grpclib.exceptions import GRPCError

from pyspire.proto.errors import DecodeError
from pyspire_sdk.errors import InvalidArgumentError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The largest request message a server accepts (gRPC's customary default)."""

_PREFIX_BYTES = 5
_MAX_REASON_CHARS = 200


class MalformedRequestError(GRPCError):
    """The bytes of a request are not a well-formed message of the expected type.

    The message is one line, fit to send back and to log.
    """

    def __init__(self, message: str) -> None:
        super().__init__(grpclib.const.Status.INVALID_ARGUMENT, message)


def _malformed(reason: str) -> MalformedRequestError:
    return MalformedRequestError(f"malformed request: {reason}")


def _one_line(error: BaseException) -> str:
    """A short single-line account of ``error`` (decoders raise multi-line or empty ones)."""
    lines = str(error).strip().splitlines()
    text = lines[0].rstrip(".") if lines else type(error).__name__
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return text[:1].lower() + text[1:]


def guard_request_frames(
    stream: grpclib.server.Stream[Any, Any],
    *,
    limit: int,
    unary: bool,
    first_message_timeout: float,
) -> None:
    """Check each request frame of ``stream`` as grpclib reads it.

    grpclib always reads a message as ``recv_data(5)`` (the prefix) then ``recv_data(length)``
    (the body); the guard follows that alternation. ``limit`` is the largest body accepted;
    ``unary`` says the call must carry exactly one message, so ending without one is refused.
    The first message must have arrived ``first_message_timeout`` seconds after this call (the
    start of the RPC); later messages of a client stream are the handler's to wait for.
    """
    inner = getattr(stream, "_stream", None)
    read = getattr(inner, "recv_data", None)
    if read is None:
        raise RuntimeError("grpclib stream has no recv_data: the request guard needs updating")
    guard = _FrameGuard(read, limit=limit, unary=unary, first_message_timeout=first_message_timeout)
    inner.recv_data = guard.recv_data  # type: ignore[union-attr]


class _FrameGuard:
    """The checks of :func:`guard_request_frames` for one stream, in front of its reads.

    The stream holds the guard (its ``recv_data``), so the guard holds the stream's own read
    weakly: a strong reference would make a cycle, and every call's stream (its buffer, queue
    and events) would wait for the cyclic collector instead of going when the call ends.
    """

    def __init__(
        self,
        read: Callable[[int], Awaitable[bytes]],
        *,
        limit: int,
        unary: bool,
        first_message_timeout: float,
    ) -> None:
        self._read = weakref.WeakMethod(read)
        self._limit = limit
        self._unary = unary
        self._first_message_timeout = first_message_timeout
        self._deadline = asyncio.get_running_loop().time() + first_message_timeout
        self._expected_body: int | None = None
        self._messages = 0

    async def recv_data(self, size: int) -> bytes:
        """What grpclib reads: a message prefix, checked, or the body it announced."""
        if self._expected_body is None:
            return await self._prefix(size)
        if size != self._expected_body:
            raise RuntimeError("grpclib read a message body of an unexpected size")
        self._expected_body = None
        body = await self._read_exactly(size, "message")
        self._messages += 1
        return body

    async def _prefix(self, size: int) -> bytes:
        if size != _PREFIX_BYTES:
            raise RuntimeError("grpclib read a message prefix of an unexpected size")
        prefix = await self._read_exactly(size, "message prefix")
        if not prefix:
            if self._unary and self._messages == 0:
                raise _malformed("the call carries no request message")
            return prefix
        flag = prefix[0]
        if flag == 1:
            raise _malformed(
                "the message is compressed, and this server accepts uncompressed messages only"
            )
        if flag != 0:
            raise _malformed(f"the compressed flag is {flag}, not 0 or 1")
        length = int.from_bytes(prefix[1:], "big")
        if length > self._limit:
            raise GRPCError(
                grpclib.const.Status.RESOURCE_EXHAUSTED,
                f"request message of {length} bytes is larger than the {self._limit} bytes allowed",
            )
        self._expected_body = length
        return prefix

    async def _read_exactly(self, size: int, what: str) -> bytes:
        try:
            data = await self._read_in_time(size)
        except AssertionError:
            # grpclib's buffer asserts when the stream ends with fewer bytes than asked for.
            raise _malformed(f"the stream ended inside the {what}") from None
        if size and not data and what == "message":
            raise _malformed("the stream ended inside the message")
        return data

    async def _read_in_time(self, size: int) -> bytes:
        read = self._read()
        if read is None:  # only grpclib reads through the guard, holding the stream meanwhile
            raise RuntimeError("the request stream is gone")
        if self._messages:
            return await read(size)
        try:
            async with asyncio.timeout_at(self._deadline):
                return await read(size)
        except TimeoutError:
            raise GRPCError(
                grpclib.const.Status.DEADLINE_EXCEEDED,
                f"the request message did not arrive within {self._first_message_timeout:g}s",
            ) from None


def checked_request_type(request_type: type[Any]) -> type[Any]:
    """A stand-in for ``request_type`` whose ``FromString`` turns any decoding failure into a
    :class:`MalformedRequestError` naming the type.

    grpclib decodes a request by calling ``FromString`` on the handler's request type and lets
    whatever the decoder raises become UNKNOWN; the stand-in is given to grpclib instead, and
    returns exactly what the real type's ``FromString`` returns.
    """
    decode = request_type.FromString
    name = request_type.__name__

    def from_string(data: bytes) -> Any:
        try:
            return decode(data)
        except GRPCError:
            raise
        except DecodeError as error:  # a generated codec names the field and the reason
            raise _malformed(f"{error.field}: {error.reason}") from None
        except InvalidArgumentError as error:
            raise MalformedRequestError(_one_line(error)) from None
        except Exception as error:
            raise _malformed(f"not a valid {name}: {_one_line(error)}") from None

    return type(f"Checked{name}", (), {"FromString": staticmethod(from_string)})
