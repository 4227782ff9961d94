"""A grpclib server whose one method does nothing, over TLS as the server's: the floor of
``bench_sync_cost.py``.

Run as ``python empty_grpc_server.py <directory>``: the directory holds ``chain.der`` (the
server's certificate), ``key.der`` (its key, PKCS#8) and ``bundle.der`` (the CA client
certificates must chain to). It listens on 127.0.0.1, prints the port, and serves until
terminated. The TLS context is the server's own (:func:`pyspire.transport.tls.
build_server_context`: TLS 1.2+, client certificates verified), the gRPC stack plain grpclib:
what any call costs before pyspire does anything.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import grpclib.const
import grpclib.server
from cryptography.hazmat.primitives.serialization import load_der_private_key

from pyspire.proto.messages import EncodedMessage
from pyspire.transport.tls import build_server_context

EMPTY_CALL = "/pyspire.bench.v1.Nothing/Call"


class Nothing:
    """One unary method: reads the request, answers an empty message."""

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            EMPTY_CALL: grpclib.const.Handler(
                self.call, grpclib.const.Cardinality.UNARY_UNARY, EncodedMessage, EncodedMessage
            )
        }

    async def call(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(EncodedMessage(b""))


async def serve(directory: Path) -> None:
    context = build_server_context(
        [(directory / "chain.der").read_bytes()],
        load_der_private_key((directory / "key.der").read_bytes(), None),
        [(directory / "bundle.der").read_bytes()],
    )
    server = grpclib.server.Server([Nothing()])
    await server.start("127.0.0.1", 0, ssl=context)
    sockets = server._server.sockets if server._server is not None else ()
    print(sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
