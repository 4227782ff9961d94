"""What the listener fuzzing scenario sends, and how.

Requests are generated from the descriptors the server and agent are built from
(:func:`pyspire.proto.descriptor_set`), not from a list kept here: :func:`service_methods` reads
every method of a service with its request type, and :func:`request_bytes` draws, for a request
type, either a well-formed message (fields present or not, values at their edges: empty, huge,
negative, unknown enum numbers, nested up to :data:`MAX_DEPTH`) or such a message mangled on the
wire (truncated, bytes flipped, garbage appended), or plain random bytes; :func:`malformed` lists
bytes that are wrong in each way the wire format can be, tried first for every request type.

:func:`call` sends drawn bytes as one gRPC call through a grpclib channel (:class:`Raw` carries
them past the codec untouched) and returns the status the listener answered with.
:func:`h2_request` and :func:`h2_status` go a level lower, writing HTTP/2 frames themselves, for
calls whose gRPC framing is broken too; :class:`LoopThread` runs all of this on an event loop of
its own, so hypothesis tests stay synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpclib.const
import h2.config
import h2.connection
import h2.events
import h2.exceptions
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpclib.client import Channel, Stream
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from hypothesis import strategies as st

from pyspire.proto import descriptor_set
from pyspire.proto.runtime import uint64_varint

MAX_DEPTH = 3
"""Nested messages deeper than this are left out (Struct and Value nest without end)."""

CALL_TIMEOUT = 5.0
"""Seconds one fuzzed call may take; a call still unanswered then counts as ``TIMEOUT``."""

STREAM_FIRST_MESSAGE = 2.0
"""Seconds to wait for the first message of an endless stream before leaving it."""

_T = TypeVar("_T")

OpenConnection = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens a fresh transport to a listener (TLS already negotiated where it uses TLS)."""


class Raw:
    """A message that is just its bytes: grpclib's codec sends and returns them unchanged."""

    __slots__ = ("data",)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> Raw:
        return cls(bytes(data))


# -- what the listeners serve ------------------------------------------------------------------


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set()).file:
        pool.Add(file)
    return pool


@dataclass(frozen=True)
class Method:
    """One RPC: its path on the wire, its request type and whether each side streams."""

    path: str
    request: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def cardinality(self) -> grpclib.const.Cardinality:
        return {
            (False, False): grpclib.const.Cardinality.UNARY_UNARY,
            (False, True): grpclib.const.Cardinality.UNARY_STREAM,
            (True, False): grpclib.const.Cardinality.STREAM_UNARY,
            (True, True): grpclib.const.Cardinality.STREAM_STREAM,
        }[(self.client_streaming, self.server_streaming)]

    def __str__(self) -> str:
        return self.path


def service_methods(*services: str) -> list[Method]:
    """Every method of the named services (full protobuf names), in declaration order."""
    pool = _pool()
    methods = []
    for name in services:
        service = pool.FindServiceByName(name)
        methods += [
            Method(
                path=f"/{service.full_name}/{method.name}",
                request=method.input_type,
                client_streaming=method.client_streaming,
                server_streaming=method.server_streaming,
            )
            for method in service.methods
        ]
    return methods


# -- requests ----------------------------------------------------------------------------------

_INTERESTING_TEXT = (
    "",
    "example.org",
    "spiffe://example.org",
    "spiffe://example.org/spire/agent/join_token/x",
    "spiffe://example.org/web",
    "spiffe://other.org/web",
    "spiffe://EXAMPLE.org/../x",
    "/",
    "//",
    "unix:uid:0",
    "a" * 300,
    "\x00",
    "é\u202e\U0001f600",
    "-1",
    "99999999999999999999",
)

_INT_RANGES: Mapping[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted(n for n in (low, high, -1, 0, 1, 2**31 - 1, 2**31, 2**32) if low <= n <= high)
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(_INTERESTING_TEXT), st.text(max_size=40))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=300), st.just(b"\x30" * 2048))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-5, 50))
    low, high = _INT_RANGES[kind]
    return _integers(low, high)


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1) if depth + 1 <= MAX_DEPTH else None
    return _scalar(field)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and bool(
        field.message_type.GetOptions().map_entry
    )


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if _is_map(field):
        entry = field.message_type
        key = _scalar(entry.fields_by_name["key"])
        value = _value(entry.fields_by_name["value"], depth)
        return None if value is None else st.dictionaries(key, value, max_size=3)
    value = _value(field, depth)
    if value is None:
        return None
    return st.lists(value, max_size=4) if field.is_repeated else value


def _build(descriptor: Descriptor, values: Mapping[str, Any]) -> Message:
    message: Message = message_factory.GetMessageClass(descriptor)()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name) if field.is_repeated or _is_map(field) else None
        if _is_map(field):
            value_is_message = (
                field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
            )
            for key, item in value.items():
                if value_is_message:
                    target[key].CopyFrom(item)  # type: ignore[index]
                else:
                    target[key] = item  # type: ignore[index]
        elif field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)  # type: ignore[union-attr]
            else:
                target.extend(value)  # type: ignore[union-attr]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


@functools.cache
def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Well-formed messages of ``descriptor``'s type: each field present or not, with values
    at their edges."""
    optional = {
        field.name: strategy
        for field in descriptor.fields
        if (strategy := _field(field, depth)) is not None
    }
    return st.fixed_dictionaries({}, optional=optional).map(functools.partial(_build, descriptor))


def _serialized(message: Message) -> bytes:
    try:
        return bytes(message.SerializeToString())
    except Exception:  # a value protobuf's writer refuses (a float out of range, say)
        return b""


@st.composite
def _mangled(draw: st.DrawFn, well_formed: st.SearchStrategy[bytes]) -> bytes:
    data = draw(well_formed)
    how = draw(st.sampled_from(("truncate", "flip", "append", "prepend")))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        return (
            data[:position]
            + bytes([data[position] ^ draw(st.integers(1, 255))])
            + data[position + 1 :]
        )
    garbage = draw(st.binary(min_size=1, max_size=32))
    return data + garbage if how == "append" else garbage + data


_LENGTH_DELIMITED = 2
"""The wire type of strings, bytes and messages."""


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` carrying ``payload`` (a string, bytes or a message)."""
    return uint64_varint(number << 3 | _LENGTH_DELIMITED) + uint64_varint(len(payload)) + payload


def malformed(descriptor: Descriptor) -> list[bytes]:
    """Bytes no protobuf parser may accept as a ``descriptor`` message, one per way of being
    wrong on the wire: field number 0, a varint cut short, a length running past the end, a
    group (wire types 3 and 4, gone from proto3), and, where the type has one, a string field
    holding invalid UTF-8 and a message field holding an undecodable message. Sent first, so
    every request type meets each of them in every run."""
    found = [
        b"\x00",
        b"\x08\xff",
        uint64_varint(1 << 3 | _LENGTH_DELIMITED) + b"\x05ab",
        b"\x0b",
    ]
    strings = [f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]
    if strings:
        found.append(length_delimited(strings[0].number, b"\xff\xfe"))
    nested = [f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_MESSAGE]
    if nested:
        found.append(length_delimited(nested[0].number, b"\x00"))
    return found


def request_bytes(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes to send as a request of ``descriptor``'s type: mostly well-formed, sometimes
    mangled on the wire, sometimes random."""
    well_formed = messages(descriptor).map(_serialized)
    return st.one_of(well_formed, _mangled(well_formed), st.binary(max_size=200))


# -- calls ---------------------------------------------------------------------------------------


async def _leave(stream: Stream[Raw, Raw]) -> None:
    """Cancel a stream we stop reading; one the listener already ended needs nothing."""
    with contextlib.suppress(h2.exceptions.StreamClosedError):
        await stream.cancel()


async def _exchange(
    channel: Channel,
    method: Method,
    payloads: Sequence[bytes],
    metadata: Mapping[str, str] | None,
) -> str:
    async with channel.request(
        method.path,
        method.cardinality,
        Raw,
        Raw,
        timeout=CALL_TIMEOUT,
        metadata=dict(metadata) if metadata else None,
    ) as stream:
        for index, payload in enumerate(payloads):
            await stream.send_message(Raw(payload), end=index == len(payloads) - 1)
        if method.server_streaming:
            # The Workload API and Health streams never end by themselves: the first
            # message (or the status, when there is none) is the answer.
            try:
                first = await asyncio.wait_for(stream.recv_message(), STREAM_FIRST_MESSAGE)
            except TimeoutError:
                await _leave(stream)
                return "NO_MESSAGE"
            if first is not None:
                await _leave(stream)
                return "OK"
        else:
            await stream.recv_message()
        await stream.recv_trailing_metadata()
    return "OK"


async def call(
    channel: Channel,
    method: Method,
    payloads: Sequence[bytes],
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Send ``payloads`` (one for a unary request) as ``method``'s request messages; the gRPC
    status name the listener answered with, ``OK`` for an answer, or what went wrong on the
    way (``TIMEOUT``, ``BROKEN``)."""
    try:
        return await asyncio.wait_for(
            _exchange(channel, method, payloads, metadata), CALL_TIMEOUT + 1
        )
    except GRPCError as error:
        return error.status.name
    except TimeoutError:
        return "TIMEOUT"
    except (StreamTerminatedError, ProtocolError, ConnectionError, OSError):
        return "BROKEN"


# -- HTTP/2 by hand ------------------------------------------------------------------------------


def h2_request(
    path: str, body: bytes, metadata: Mapping[str, str] | None = None
) -> tuple[h2.connection.H2Connection, bytes]:
    """A client connection and the bytes that open it and send one gRPC call to ``path`` whose
    body (gRPC framing included) is ``body``."""
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    connection.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *(metadata or {}).items(),
    ]
    connection.send_headers(1, headers)
    connection.send_data(1, body, end_stream=True)
    return connection, connection.data_to_send()


def _grpc_status(headers: Sequence[tuple[bytes | str, bytes | str]]) -> str | None:
    for name, value in headers:
        if name in ("grpc-status", b"grpc-status"):
            text = value.decode() if isinstance(value, bytes) else value
            return grpclib.const.Status(int(text)).name
    return None


async def h2_status(
    connection: h2.connection.H2Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    within: float,
) -> str:
    """Read until stream 1 has a ``grpc-status`` (its name) or a response message (``OK``),
    the peer resets it (``RESET``), closes (``CLOSED``), or ``within`` seconds pass
    (``TIMEOUT``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return "TIMEOUT"
        try:
            data = await asyncio.wait_for(reader.read(65536), remaining)
        except TimeoutError:
            return "TIMEOUT"
        except (ConnectionError, OSError):
            return "CLOSED"
        if not data:
            return "CLOSED"
        try:
            events = connection.receive_data(data)
        except h2.exceptions.ProtocolError:
            return "PEER_PROTOCOL_ERROR"
        for event in events:
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                status = _grpc_status(event.headers or [])
                if status is not None:
                    return status
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                return "OK"  # a response message: the call is being answered
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == 1:
                return "RESET"
            elif isinstance(event, h2.events.ConnectionTerminated):
                return "GOAWAY"
        pending = connection.data_to_send()
        if pending:
            writer.write(pending)


def grpc_frame(message: bytes, *, compressed: bool = False, declared: int | None = None) -> bytes:
    """``message`` in gRPC's length-prefixed framing, optionally lying about its length or
    claiming compression."""
    length = len(message) if declared is None else declared
    return bytes([1 if compressed else 0]) + length.to_bytes(4, "big") + message


# -- an event loop on a thread -------------------------------------------------------------------


class LoopThread:
    """An asyncio loop on a thread of its own: synchronous code (hypothesis tests) runs
    coroutines on it with :meth:`run`, and objects bound to a loop (channels) live there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 60.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Callable[[], _T]) -> _T:
        """Run a plain function on the loop's thread (to make loop-bound objects there)."""

        async def inside() -> _T:
            return function()

        return self.run(inside())

    def close(self) -> None:
        async def cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [task for task in asyncio.all_tasks() if task is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
