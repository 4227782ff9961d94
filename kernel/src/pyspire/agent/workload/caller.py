"""Who calls the agent's public socket: the attested selectors of the process at the other end.

The Workload API and the Secret Discovery Service identify their caller the same way: its pid
from the unix socket's peer credentials, turned into selectors by the workload attestor chain.
A caller that cannot be attested gets UNAVAILABLE (``workload attestation failed``), and the
reason stays in the agent's log.
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


async def attest_caller(
    attestation: WorkloadAttestation, log: FilteringBoundLogger
) -> frozenset[Selector]:
    """The selectors of the process calling the current stream; UNAVAILABLE when they cannot
    be established."""
    stream = current_stream()
    try:
        credentials = peer_credentials(stream.peer)
    except OSError as error:
        log.warning("caller has no peer credentials", error=str(error))
        raise GRPCError(Status.UNAVAILABLE, "workload attestation failed") from None
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
        raise GRPCError(Status.UNAVAILABLE, "workload attestation failed") from None
