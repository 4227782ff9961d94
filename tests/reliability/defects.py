"""Known defects that scenarios catch, each an expected failure until its fix is merged.

Every mark is ``strict``: once the fix lands, the scenario passes, the strict mark turns that
pass into a failure, and the mark must be removed (here and where it is used). The reason names
the defect and the behaviour the scenario requires.
"""

from __future__ import annotations

import pytest

AGENT_OUTAGE = pytest.mark.xfail(
    reason=(
        "agent SVID expiry during a server outage: the agent serves expired X509-SVIDs, and "
        "once its own SVID expired the returning server refuses it, so it never resyncs"
    ),
    strict=True,
)

AGENT_PERSISTENCE = pytest.mark.xfail(
    reason=(
        "agent SVID persistence: workload X509-SVIDs are not persisted, so an agent restarted "
        "while the server is down serves no identity (PERMISSION_DENIED)"
    ),
    strict=True,
)

IDLE_CONNECTIONS = pytest.mark.xfail(
    reason=(
        "connection limits and timeouts: the server keeps every idle unauthenticated TLS "
        "connection open without limit, each holding about 290 KB (asyncio's TLS buffers), so "
        "a few hundred strangers grow its memory past 50 MB"
    ),
    strict=True,
)

MALFORMED_REQUESTS = pytest.mark.xfail(
    reason=(
        "malformed requests: bytes that do not decode as the request type (field number 0, a "
        "cut varint, invalid UTF-8, ...) are answered UNKNOWN instead of INVALID_ARGUMENT"
    ),
    strict=True,
)

MALFORMED_REQUEST_CASES = frozenset(
    (
        "agent-api:/spire.api.server.agent.v1.Agent/AttestAgent",
        "agent-api:/spire.api.server.agent.v1.Agent/RenewAgent",
        "agent-api:/spire.api.server.agent.v1.Agent/PostStatus",
        "agent-api:/spire.api.server.bundle.v1.Bundle/GetBundle",
        "agent-api:/spire.api.server.bundle.v1.Bundle/GetFederatedBundle",
        "agent-api:/spire.api.server.entry.v1.Entry/GetAuthorizedEntries",
        "agent-api:/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries",
        "agent-api:/spire.api.server.svid.v1.SVID/NewJWTSVID",
        "admin:/spire.api.server.agent.v1.Agent/CountAgents",
        "admin:/spire.api.server.agent.v1.Agent/ListAgents",
        "admin:/spire.api.server.agent.v1.Agent/GetAgent",
        "admin:/spire.api.server.agent.v1.Agent/DeleteAgent",
        "admin:/spire.api.server.agent.v1.Agent/BanAgent",
        "admin:/spire.api.server.agent.v1.Agent/AttestAgent",
        "admin:/spire.api.server.agent.v1.Agent/CreateJoinToken",
        "admin:/spire.api.server.bundle.v1.Bundle/CountBundles",
        "admin:/spire.api.server.bundle.v1.Bundle/GetBundle",
        "admin:/spire.api.server.bundle.v1.Bundle/AppendBundle",
        "admin:/spire.api.server.bundle.v1.Bundle/ListFederatedBundles",
        "admin:/spire.api.server.bundle.v1.Bundle/GetFederatedBundle",
        "admin:/spire.api.server.bundle.v1.Bundle/BatchCreateFederatedBundle",
        "admin:/spire.api.server.bundle.v1.Bundle/BatchUpdateFederatedBundle",
        "admin:/spire.api.server.bundle.v1.Bundle/BatchSetFederatedBundle",
        "admin:/spire.api.server.bundle.v1.Bundle/BatchDeleteFederatedBundle",
        "admin:/spire.api.server.entry.v1.Entry/CountEntries",
        "admin:/spire.api.server.entry.v1.Entry/ListEntries",
        "admin:/spire.api.server.entry.v1.Entry/GetEntry",
        "admin:/spire.api.server.entry.v1.Entry/BatchCreateEntry",
        "admin:/spire.api.server.entry.v1.Entry/BatchUpdateEntry",
        "admin:/spire.api.server.entry.v1.Entry/BatchDeleteEntry",
        "admin:/spire.api.server.svid.v1.SVID/MintX509SVID",
        "admin:/spire.api.server.svid.v1.SVID/MintJWTSVID",
        "admin:/spire.api.server.debug.v1.Debug/GetInfo",
        "admin:/grpc.health.v1.Health/Check",
        "admin:/grpc.health.v1.Health/Watch",
        "workload:/SpiffeWorkloadAPI/FetchX509SVID",
        "workload:/SpiffeWorkloadAPI/FetchX509Bundles",
        "workload:/SpiffeWorkloadAPI/FetchJWTSVID",
        "workload:/SpiffeWorkloadAPI/FetchJWTBundles",
        "workload:/SpiffeWorkloadAPI/ValidateJWTSVID",
    )
)
"""The fuzzed request types (``listener:method path``) that answer malformed bytes UNKNOWN;
the others refuse such callers before decoding (PERMISSION_DENIED) or decode by hand."""
