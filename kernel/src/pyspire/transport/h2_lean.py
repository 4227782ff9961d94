"""h2's connection, made cheaper per call without changing what it sends or answers.

Two costs of h2 4.x are paid at every call and buy nothing here. h2 formats every frame it
receives for a trace log (``repr(frame)``, some 5-15 µs a frame, before its no-op logger
drops it): :class:`LeanH2Connection` is h2's connection receiving frames exactly as h2 does,
minus that line. And hpack codes a connection's header blocks field by field although they
repeat call after call: :func:`lighten` gives the connection the memoizing codec of
:mod:`.hpack_memo`.

:func:`lighten` works on one connection h2 has just built (grpclib builds it, so the seam
of :mod:`.grpclib_protocol`, which the server's listener and the agent's channel share, calls
it): nothing global in h2, hpack or hyperframe is changed. :data:`RECEIVE_FRAME_SHA256`
records the h2 method :class:`LeanH2Connection` mirrors; its test fails when an h2 upgrade
changes that method, and the copy must then be redone.
"""

from __future__ import annotations

__all__ = ["RECEIVE_FRAME_SHA256", "LeanH2Connection", "lighten"]

from typing import Any

from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import Event
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from hyperframe.frame import Frame, RstStreamFrame

from pyspire.transport.hpack_memo import MemoDecoder, MemoEncoder

RECEIVE_FRAME_SHA256 = "39b2e16b4fd74ed014ca144a0c6e388aef3dc51f116d6f0a874b70d92bd92873"
"""SHA-256 of the source of ``h2.connection.H2Connection._receive_frame`` (as of h2 4.4.1),
which :meth:`LeanH2Connection._receive_frame` copies but for its trace line."""


class LeanH2Connection(H2Connection):
    """h2's connection without the per-frame ``repr`` built for its trace log.

    It adds no state: :func:`lighten` turns a connection h2 built into one.
    """

    def _receive_frame(self, frame: Frame) -> list[Event]:
        # h2's H2Connection._receive_frame (MIT licence), less its trace line.
        events: list[Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events


def lighten(connection: H2Connection) -> None:
    """Make ``connection`` (h2's own, with no header block coded yet) a
    :class:`LeanH2Connection` with the memoizing HPACK codec."""
    if type(connection) is not H2Connection:
        raise RuntimeError(f"expected h2's own H2Connection, got {type(connection).__name__}")
    inner: Any = connection
    if not hasattr(inner, "_frame_dispatch_table") or not hasattr(inner, "encoder"):
        raise RuntimeError("h2 connection internals changed: lighten needs updating")
    connection.encoder = MemoEncoder.replacing(connection.encoder)
    connection.decoder = MemoDecoder.replacing(connection.decoder)
    connection.__class__ = LeanH2Connection
