"""The agent's Debug API (``spire.agent.debug.v1.Debug``), on the admin socket.

GetInfo reports what an operator checks first, with SPIRE's field names and numbers: the
agent's own SVID chain up to the root of the trust bundle that signed it (each certificate's
SPIFFE ID, expiry and subject), the uptime on the agent's clock, how many X509-SVIDs the
workload cache holds (``cached_x509_svids_count``, and the deprecated ``svids_count`` with the
same value, as SPIRE sends it), how many JWT-SVIDs it holds, how many SVIDs of entries marked
``store_svid`` are held for SVID stores, and when the last sync succeeded (seconds since the
epoch; 0 before the first one). An agent SVID that does not chain to the bundle is an INTERNAL
error, as in SPIRE.
"""

from __future__ import annotations

__all__ = ["AgentCredentials", "AgentStatus", "DebugService", "chain_to_root"]

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import WorkloadCache
from pyspire.agent.stored_svids import StoredSvidCache
from pyspire.agent.sync import SyncManager
from pyspire.proto.debug_info import certificate_info, int32_count
from pyspire.proto.gen.spire.agent.debug import v1 as debug_pb
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock


class AgentCredentials(Protocol):
    """The agent's own SVID as GetInfo needs it (a
    :class:`~pyspire.agent.node_identity.NodeIdentity`)."""

    @property
    def chain(self) -> tuple[bytes, ...]:
        """The agent SVID's certificates, DER, leaf first."""
        ...

    @property
    def bundle(self) -> Bundle:
        """Our trust domain's bundle."""
        ...


@dataclass(frozen=True)
class AgentStatus:
    """Where GetInfo reads the agent's state from."""

    credentials: AgentCredentials
    cache: WorkloadCache
    stored: StoredSvidCache
    sync: SyncManager
    clock: Clock
    started_at: datetime


def chain_to_root(chain: tuple[bytes, ...], bundle: Bundle) -> tuple[bytes, ...]:
    """``chain`` followed by the authority of ``bundle`` that signed its last certificate
    (nothing more when that certificate is itself in the bundle).

    Raises :class:`GRPCError` INTERNAL when no authority of the bundle signed it.
    """
    top_der = chain[-1]
    top = x509.load_der_x509_certificate(top_der)
    for authority in bundle.x509_authorities:
        if authority.der == top_der:
            return chain
        try:
            top.verify_directly_issued_by(authority.certificate())
        except (ValueError, TypeError, InvalidSignature):
            continue
        return (*chain, authority.der)
    raise GRPCError(
        Status.INTERNAL, "failed to verify agent svid: no authority of the bundle signed it"
    )


class DebugService(debug_pb.DebugBase):
    """``spire.agent.debug.v1.Debug`` over an :class:`AgentStatus`."""

    def __init__(self, status: AgentStatus) -> None:
        self._status = status

    async def get_info(self, get_info_request: debug_pb.GetInfoRequest) -> debug_pb.GetInfoResponse:
        status = self._status
        credentials = status.credentials
        chain = chain_to_root(credentials.chain, credentials.bundle)
        uptime = (status.clock.now() - status.started_at).total_seconds()
        last_sync = status.sync.last_success
        x509_svids = int32_count(status.cache.svid_count)
        response = debug_pb.GetInfoResponse(
            svid_chain=[certificate_info(der, debug_pb.GetInfoResponseCert) for der in chain],
            uptime=int32_count(math.floor(uptime)),
            last_sync_success=0 if last_sync is None else math.floor(last_sync.timestamp()),
            cached_x509_svids_count=x509_svids,
            cached_jwt_svids_count=int32_count(len(status.cache.jwt_svids)),
            cached_svidstore_x509_svids_count=int32_count(status.stored.svid_count),
        )
        # Set after construction: the generated constructor warns about the deprecated field
        # on every call, yet SPIRE still sends it for older clients.
        response.svids_count = x509_svids
        return response
