"""gRPC channels for tests and benchmarks that play many clients from one process.

The server admits one attestation per second per client address, so a test or benchmark that
attests many agents at once gives each its own loopback address (all of ``127.0.0.0/8`` reaches
this host on Linux).
"""

from __future__ import annotations

import ssl

from grpclib.client import Channel
from grpclib.protocol import H2Protocol

from pyspire.transport.tls import ALPN


class SourceBoundChannel(Channel):
    """A grpclib channel whose TCP connection leaves from ``source``, so the server sees each
    client as a different address. grpclib has no option for it: this overrides its connection
    factory, the one place that would break on a grpclib change."""

    def __init__(self, source: str, host: str, port: int, ssl: ssl.SSLContext) -> None:
        super().__init__(host, port, ssl=ssl)
        self._source = source

    async def _create_connection(self) -> H2Protocol:
        _, protocol = await self._loop.create_connection(
            self._protocol_factory,
            self._host,
            self._port,
            ssl=self._ssl,
            local_addr=(self._source, 0),
        )
        return protocol


def anonymous_context() -> ssl.SSLContext:
    """A client context without a certificate that does not check the server's, as an agent's
    first contact (insecure bootstrap) is."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(ALPN)
    return context
