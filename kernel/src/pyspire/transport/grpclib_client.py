"""Where pyspire reaches into grpclib's client: two small functions, each with its own test.

A grpclib ``Channel`` opens its connection on the first call and opens a new one, with the
same TLS context, on the first call after it broke. :func:`open_channel` is such a channel
whose every connection is connected as the server's are (:func:`~.grpclib_protocol.
connect_lean`): a call's request headers and message leave in one TLS record and one
``send`` instead of one each, and its HTTP/2 is coded through :mod:`.h2_lean` (no frame
formatted for a no-op trace log, repeated header blocks answered from a memo). The agent
keeps one channel for as long as its SVID lasts, but must not let it reconnect with trust
anchors it has since replaced: :func:`is_connected` tells whether a channel's connection is
open, so a channel that would reconnect can be replaced instead. A grpclib upgrade that
changes either seam fails its test.
"""

from __future__ import annotations

__all__ = ["is_connected", "open_channel"]

import asyncio
import ssl
from typing import Any

import grpclib.protocol
from grpclib.client import Channel, Handler

from pyspire.transport.grpclib_protocol import connect_lean


class _LeanClientProtocol(grpclib.protocol.H2Protocol):
    """grpclib's client protocol, connected through :func:`~.grpclib_protocol.connect_lean`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError(f"expected a stream transport, got {type(transport).__name__}")
        connect_lean(self, transport)


class _LeanChannel(Channel):
    """grpclib's channel, whose connections speak through :class:`_LeanClientProtocol`."""

    def _protocol_factory(self) -> grpclib.protocol.H2Protocol:
        inner: Any = self
        return _LeanClientProtocol(Handler(), inner._config, inner._h2_config)


def open_channel(host: str, port: int, *, ssl: ssl.SSLContext | None) -> Channel:
    """A grpclib channel to ``host:port`` (over TLS with ``ssl``, in the clear without) whose
    connections write each loop turn's frames at once and code HTTP/2 the cheaper way; it
    behaves as grpclib's own ``Channel(host, port, ssl=ssl)`` otherwise."""
    channel = _LeanChannel(host, port, ssl=ssl)
    inner: Any = channel
    if not all(hasattr(inner, name) for name in ("_protocol_factory", "_config", "_h2_config")):
        raise RuntimeError("grpclib channel internals changed: open_channel needs updating")
    return channel


def is_connected(channel: Channel) -> bool:
    """Whether ``channel`` holds an open connection (False before its first call and once
    the connection is lost or closed)."""
    inner: Any = channel
    if not hasattr(inner, "_protocol"):
        raise RuntimeError("grpclib channel internals changed: is_connected needs updating")
    protocol = inner._protocol
    if protocol is None:
        return False
    return not protocol.handler.connection_lost
