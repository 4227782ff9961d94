"""The SPIFFE Workload API served by the agent: attestation of the caller, the five RPCs, JWT-SVID
validation, Envoy's Secret Discovery Service beside them, and the unix socket endpoint."""

from pyspire.agent.workload.attestation import (
    DEFAULT_ATTESTOR_TIMEOUT,
    WorkloadAttestation,
    WorkloadAttestationError,
)
from pyspire.agent.workload.endpoint import WorkloadEndpoint
from pyspire.agent.workload.jwt_validation import ValidatedJwtSvid, validate_jwt_svid
from pyspire.agent.workload.sds import SecretDiscoveryService
from pyspire.agent.workload.service import SECURITY_HEADER, WorkloadApiService

__all__ = [
    "DEFAULT_ATTESTOR_TIMEOUT",
    "SECURITY_HEADER",
    "SecretDiscoveryService",
    "ValidatedJwtSvid",
    "WorkloadApiService",
    "WorkloadAttestation",
    "WorkloadAttestationError",
    "WorkloadEndpoint",
    "validate_jwt_svid",
]
