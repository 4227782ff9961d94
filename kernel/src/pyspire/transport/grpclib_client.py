"""Where pyspire reaches into grpclib's client: one small function with its own test.

A grpclib ``Channel`` opens its connection on the first call and opens a new one, with the
same TLS context, on the first call after it broke. The agent keeps one channel for as long
as its SVID lasts, but must not let it reconnect with trust anchors it has since replaced:
:func:`is_connected` tells whether a channel's connection is open, so a channel that would
reconnect can be replaced instead. A grpclib upgrade that changes this seam fails its test.
"""

from __future__ import annotations

__all__ = ["is_connected"]

from typing import Any

from grpclib.client import Channel


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
