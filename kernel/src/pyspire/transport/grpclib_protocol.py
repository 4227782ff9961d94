"""Where pyspire reaches into grpclib's HTTP/2 protocol, which its server and client share.

grpclib runs every connection, a server's or a client's, through one ``H2Protocol``: it
builds h2's connection when the transport is made and writes each HTTP/2 step of a call on
its own. :func:`connect_lean` makes such a protocol's connection as grpclib would, but
writing through a :class:`~.coalesce.CoalescingTransport` (what one turn of the loop writes
leaves in one TLS record and one ``send``: a server's answer, a client's request headers
and message) and coding HTTP/2 through :func:`lighten_connection`, the cheaper per-call
path of :mod:`.h2_lean`. The server's listener and the agent's channel
(:mod:`.grpclib_client`) both connect their protocols through it, so both sides of a
pyspire call pay the same. A grpclib upgrade that changes what these functions rely on fails
their tests loudly, and nothing else in pyspire knows these internals.
"""

from __future__ import annotations

__all__ = ["connect_lean", "lighten_connection"]

import asyncio

import grpclib.protocol

from pyspire.transport.coalesce import CoalescingTransport
from pyspire.transport.h2_lean import lighten


def lighten_connection(protocol: asyncio.Protocol) -> None:
    """Give the h2 connection of ``protocol`` (a grpclib protocol just connected, before any
    byte was received) the cheaper per-call path of :func:`~.h2_lean.lighten`."""
    connection = getattr(getattr(protocol, "connection", None), "_connection", None)
    if not isinstance(protocol, grpclib.protocol.H2Protocol) or connection is None:
        raise RuntimeError("grpclib protocol changed: lighten_connection needs updating")
    lighten(connection)


def connect_lean(protocol: asyncio.Protocol, transport: asyncio.Transport) -> None:
    """Connect ``protocol`` (a grpclib protocol) to ``transport`` as grpclib's
    ``H2Protocol.connection_made`` does (a subclass's override is not called), writing
    through a coalescing transport and with its h2 connection lightened before any byte is
    received."""
    if not isinstance(protocol, grpclib.protocol.H2Protocol):
        raise RuntimeError("grpclib protocol changed: connect_lean needs updating")
    coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
    grpclib.protocol.H2Protocol.connection_made(protocol, coalescing)
    lighten_connection(protocol)
