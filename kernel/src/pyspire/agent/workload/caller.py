"""Who calls on a unix socket, by its selectors: the peer's pid from SO_PEERCRED, attested by
the agent's workload attestor chain.

The Workload API, the Secret Discovery Service and the Delegated Identity API (which attests
its caller before it trusts it as a delegate) identify their caller the same way; a caller whose
selectors cannot be established gets UNAVAILABLE "workload attestation failed", as in SPIRE, and
the reason goes to the agent's log only.
"""

from __future__ import annotations

__all__ = ["attest_caller"]

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from structlog.typing import FilteringBoundLogger

from pyspire.agent.workload.attestation import WorkloadAttestation, WorkloadAttestationError
from pyspire.transport.calls import current_stream
from pyspire.transport.peer import peer_credentials
from pyspire_sdk.selector import Selector

ATTESTATION_FAILED = "workload attestation failed"
"""The status message of a caller that could not be attested."""


async def attest_caller(
    attestation: WorkloadAttestation, log: FilteringBoundLogger
) -> frozenset[Selector]:
    """The selectors of the process calling now (the call's stream, see
    :func:`~pyspire.transport.calls.current_stream`); UNAVAILABLE when they cannot be
    established."""
    stream = current_stream()
    try:
        credentials = peer_credentials(stream.peer)
    except OSError as error:
        log.warning("caller has no peer credentials", error=str(error))
        raise GRPCError(Status.UNAVAILABLE, ATTESTATION_FAILED) from None
    try:
        return await attestation.attest(credentials.pid)
    except WorkloadAttestationError as error:
        log.warning(
            "workload attestation failed",
            pid=credentials.pid,
            uid=credentials.uid,
            attestor=error.attestor,
            reason=error.reason,
        )
        raise GRPCError(Status.UNAVAILABLE, ATTESTATION_FAILED) from None
