"""Who is calling: the peer's certificate (TCP+TLS) or process credentials (unix socket).

grpclib has no public accessor for the transport under a stream, only ``Peer`` with a private
``_transport``. Every use of that private attribute is in this module, behind two functions
with their own tests, so a grpclib upgrade that changes it breaks here, loudly, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyspire.transport.tls import spiffe_id_of
from pyspire_sdk.errors import PyspireError

_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class ProcessCredentials:
    """The pid, uid and gid of the process on the other end of a unix socket."""

    pid: int
    uid: int
    gid: int


def _transport(peer: Any) -> Any:
    transport = getattr(peer, "_transport", None)
    if transport is None:
        raise RuntimeError("grpclib peer has no transport: the peer accessor needs updating")
    return transport


def peer_connection(peer: Any) -> asyncio.BaseTransport:
    """The connection (transport) under ``peer``: the same object for every call on it, for
    as long as it is open, so that what is learnt about a caller can be kept per connection."""
    transport: asyncio.BaseTransport = _transport(peer)
    return transport


def transport_certificate(transport: asyncio.BaseTransport) -> bytes | None:
    """The DER leaf certificate the peer of ``transport`` presented in the TLS handshake, or
    None (no TLS, or no client certificate)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der or None


def peer_certificate(peer: Any) -> bytes | None:
    """The DER leaf certificate the peer presented in the TLS handshake, or None (no TLS, or
    no client certificate)."""
    return transport_certificate(_transport(peer))


def socket_credentials(sock: socket.socket) -> ProcessCredentials:
    """SO_PEERCRED of a connected unix socket: who is on the other end (for a listening
    socket's client, the process that called ``listen``)."""
    if sock.family != socket.AF_UNIX:
        raise OSError("peer credentials need a unix socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return ProcessCredentials(pid=pid, uid=uid, gid=gid)


def peer_credentials(peer: Any) -> ProcessCredentials:
    """SO_PEERCRED of the unix socket under ``peer``; OSError when it is not a unix socket."""
    sock = _transport(peer).get_extra_info("socket")
    if sock is None:
        raise OSError("peer credentials need a unix socket")
    return socket_credentials(sock)


def peer_address(peer: Any) -> str:
    """The peer's IP address (for rate limits and logs), or "" on a unix socket."""
    address = _transport(peer).get_extra_info("peername")
    if isinstance(address, tuple) and address:
        return str(address[0])
    return ""


def caller_fields(peer: Any) -> dict[str, Any]:
    """Who is on the other end of ``peer``, as the audit log names it: ``caller_uid``,
    ``caller_gid`` and ``caller_pid`` on a unix socket or ``caller_addr`` on TCP, and
    ``caller_id``, the SPIFFE ID of the client certificate when one was presented."""
    fields: dict[str, Any] = {}
    try:
        credentials = peer_credentials(peer)
    except OSError:
        fields["caller_addr"] = peer_address(peer)
    else:
        fields["caller_uid"] = credentials.uid
        fields["caller_gid"] = credentials.gid
        fields["caller_pid"] = credentials.pid
    certificate = peer_certificate(peer)
    if certificate is not None:
        with contextlib.suppress(PyspireError):
            fields["caller_id"] = str(spiffe_id_of(certificate))
    return fields
