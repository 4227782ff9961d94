"""How a grpclib protocol is connected on either side: as grpclib connects it, but writing
each loop turn's frames at once and coding HTTP/2 through the lean connection."""

from __future__ import annotations

import asyncio

import grpclib.client
import grpclib.config
import grpclib.protocol
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection

from pyspire.transport.coalesce import CoalescingTransport
from pyspire.transport.grpclib_protocol import connect_lean, lighten_connection
from pyspire.transport.h2_lean import LeanH2Connection
from pyspire.transport.hpack_memo import MemoDecoder, MemoEncoder

from .test_coalesce import RecordingTransport, turn


def client_protocol() -> grpclib.protocol.H2Protocol:
    """The protocol a grpclib channel makes for each connection."""
    return grpclib.protocol.H2Protocol(
        grpclib.client.Handler(),
        grpclib.config.Configuration().__for_client__(),
        H2Configuration(client_side=True, header_encoding="ascii"),
    )


async def test_a_connected_protocol_writes_coalesced_and_codes_lean() -> None:
    protocol = client_protocol()
    transport = RecordingTransport()
    connect_lean(protocol, transport)
    assert isinstance(protocol.connection._transport, CoalescingTransport)
    h2_connection = protocol.connection._connection
    assert isinstance(h2_connection, LeanH2Connection)
    assert isinstance(h2_connection.encoder, MemoEncoder)
    assert isinstance(h2_connection.decoder, MemoDecoder)
    # The preface and settings grpclib wrote leave at the next turn, as plain h2 makes them.
    assert transport.writes == []
    await turn()
    plain = H2Connection(H2Configuration(client_side=True, header_encoding="ascii"))
    plain.initiate_connection()
    (written,) = transport.writes
    assert written.startswith(plain.data_to_send())


async def test_the_seams_refuse_what_they_do_not_recognise() -> None:
    with pytest.raises(RuntimeError, match="lighten_connection needs updating"):
        lighten_connection(asyncio.Protocol())
    with pytest.raises(RuntimeError, match="connect_lean needs updating"):
        connect_lean(asyncio.Protocol(), RecordingTransport())
