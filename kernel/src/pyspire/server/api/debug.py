"""The server's Debug API (``spire.api.server.debug.v1.Debug``, local callers only).

GetInfo reports what an operator checks first: the server's own SVID chain (each certificate's
SPIFFE ID, expiry and subject), the uptime on the server's clock, and how many agents, entries
and federated bundles the datastore holds.
"""

from __future__ import annotations

__all__ = ["DebugService", "certificate_info"]

import math

from pyspire.proto import debug_info
from pyspire.proto.debug_info import int32_count
from pyspire.proto.gen.spire.api.server.debug import v1 as debug_pb
from pyspire.server.context import ServerContext


def certificate_info(certificate_der: bytes) -> debug_pb.GetInfoResponseCert:
    """One certificate of the chain as GetInfo reports it (see
    :func:`pyspire.proto.debug_info.certificate_info`)."""
    return debug_info.certificate_info(certificate_der, debug_pb.GetInfoResponseCert)


class DebugService(debug_pb.DebugBase):
    """``spire.api.server.debug.v1.Debug`` over a :class:`ServerContext`."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    async def get_info(self, get_info_request: debug_pb.GetInfoRequest) -> debug_pb.GetInfoResponse:
        context = self._context
        datastore = context.datastore
        uptime = (context.clock.now() - context.started_at).total_seconds()
        agents = await datastore.count_attested_nodes()
        entries = await datastore.count_entries()
        bundles = await datastore.count_bundles()
        own_bundle = await datastore.get_bundle(context.trust_domain)
        federated = bundles - (1 if own_bundle is not None else 0)
        return debug_pb.GetInfoResponse(
            svid_chain=[certificate_info(der) for der in context.server_svid_chain],
            uptime=int32_count(math.floor(uptime)),
            agents_count=int32_count(agents),
            entries_count=int32_count(entries),
            federated_bundles_count=int32_count(federated),
        )
