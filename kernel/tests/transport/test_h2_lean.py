"""The lean h2 connection against h2's own: the same bytes out and the same events for the same
bytes in, errors included, without formatting a frame; and the h2 method it copies is the one
it was copied from."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from hyperframe.frame import DataFrame, Frame, HeadersFrame

from pyspire.transport.h2_lean import RECEIVE_FRAME_SHA256, LeanH2Connection, lighten
from pyspire.transport.hpack_memo import MemoDecoder, MemoEncoder


def test_the_copied_h2_method_is_unchanged() -> None:
    source = inspect.getsource(H2Connection._receive_frame)
    assert hashlib.sha256(source.encode()).hexdigest() == RECEIVE_FRAME_SHA256, (
        "h2's H2Connection._receive_frame changed: redo LeanH2Connection._receive_frame from "
        "it and record its new digest in RECEIVE_FRAME_SHA256"
    )


def server(lean: bool) -> H2Connection:
    connection = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    connection.initiate_connection()
    if lean:
        lighten(connection)
        assert isinstance(connection, LeanH2Connection)
    connection.data_to_send()
    return connection


REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":path", b"/spire.api.server.agent.v1.Agent/Sync"),
    (b":authority", b"server"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


Respond = Callable[[H2Connection], None]


def client_steps() -> list[tuple[str, bytes, Respond]]:
    """What a client sends, step by step, and how the server answers each step (the client
    reads nothing, so its bytes do not depend on the answers)."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    steps: list[tuple[str, bytes, Respond]] = [("preface", client.data_to_send(), _nothing)]
    stream = 1
    for _ in range(4):  # the same call again and again: the memo's case
        client.send_headers(stream, REQUEST)
        client.send_data(stream, b"\x00\x00\x00\x00\x02hi", end_stream=True)
        steps.append(("call", client.data_to_send(), answer(stream)))
        stream += 2
    client.send_headers(stream, [*REQUEST, (b"x-changing", b"1")])
    client.reset_stream(stream, ErrorCodes.CANCEL)
    steps.append(("reset", client.data_to_send(), _nothing))
    # A frame on the stream the client reset: h2 answers RST_STREAM (a stream error).
    steps.append(("late data", DataFrame(stream, data=b"late").serialize(), _nothing))
    # A frame on a stream ended both ways: a connection error.
    closed = HeadersFrame(1, data=b"\x82", flags=["END_HEADERS", "END_STREAM"])
    steps.append(("closed", closed.serialize(), _nothing))
    return steps


def _nothing(server: H2Connection) -> None:
    return None


def answer(stream: int) -> Respond:
    def reply(server: H2Connection) -> None:
        server.send_headers(stream, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        server.send_data(stream, b"\x00\x00\x00\x00\x00")
        server.send_headers(stream, [(b"grpc-status", b"0")], end_stream=True)

    return reply


def run(lean: bool) -> list[Any]:
    """Everything the server says and raises, step by step."""
    connection = server(lean)
    transcript: list[Any] = []
    for name, data, respond in client_steps():
        try:
            events = connection.receive_data(data)
        except ProtocolError as error:
            transcript.append((name, "error", type(error).__name__, connection.data_to_send()))
            break
        respond(connection)
        transcript.append((name, [repr(event) for event in events], connection.data_to_send()))
    return transcript


def test_the_lean_connection_says_what_h2_says() -> None:
    plain, lean = run(lean=False), run(lean=True)
    assert lean == plain
    steps = ["preface", *["call"] * 4, "reset", "late data", "closed"]
    assert [step[0] for step in plain] == steps
    assert plain[-1][1] == "error"  # the script did reach h2's error paths
    assert b"\x00\x00\x04\x03" in plain[-2][2]  # late data: RST_STREAM sent


def test_the_lean_connection_formats_no_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    formatted: list[str] = []
    original = Frame.__repr__

    def counting(frame: Frame) -> str:
        formatted.append(type(frame).__name__)
        return original(frame)

    monkeypatch.setattr(Frame, "__repr__", counting)
    run(lean=False)
    assert formatted  # h2's own formats every frame it receives
    formatted.clear()
    run(lean=True)
    assert formatted == []


def test_lighten_gives_the_memo_codec_and_takes_only_h2s_own_connection() -> None:
    connection = server(lean=True)
    assert isinstance(connection.encoder, MemoEncoder)
    assert isinstance(connection.decoder, MemoDecoder)
    with pytest.raises(RuntimeError, match="expected h2's own H2Connection"):
        lighten(connection)
