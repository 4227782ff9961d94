"""Who may call which server RPC (SPIRE's authorization policy, by caller kind).

Kinds: ``local`` (came in over the admin unix socket), ``admin`` (an SVID whose entry is marked
admin), ``agent`` (an attested, unbanned node presenting its current SVID), ``downstream`` (an
SVID whose entry is marked downstream) and ``any`` (anyone, also unauthenticated). A method not
listed is refused: new RPCs are closed until someone decides who may call them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pyspire_sdk.model import AttestedNode
from pyspire_sdk.spiffeid import SpiffeId


class CallerKind(StrEnum):
    """A reason a caller may be allowed to call a method."""

    LOCAL = "local"
    ADMIN = "admin"
    AGENT = "agent"
    DOWNSTREAM = "downstream"
    ANY = "any"


@dataclass(frozen=True)
class Caller:
    """What the transport and the registry know about the caller of one RPC."""

    kinds: frozenset[CallerKind]
    spiffe_id: SpiffeId | None = None
    node: AttestedNode | None = None
    address: str = ""
    certificate_der: bytes | None = field(default=None, repr=False)

    def is_(self, kind: CallerKind) -> bool:
        return kind in self.kinds


_ADMIN = frozenset({CallerKind.LOCAL, CallerKind.ADMIN})
_ANY = frozenset({CallerKind.ANY})
_AGENT = frozenset({CallerKind.AGENT})
_LOCAL = frozenset({CallerKind.LOCAL})
_DOWNSTREAM = frozenset({CallerKind.DOWNSTREAM})

_AGENT_SERVICE = "/spire.api.server.agent.v1.Agent/"
_BUNDLE_SERVICE = "/spire.api.server.bundle.v1.Bundle/"
_ENTRY_SERVICE = "/spire.api.server.entry.v1.Entry/"
_SVID_SERVICE = "/spire.api.server.svid.v1.SVID/"
_TRUST_DOMAIN_SERVICE = "/spire.api.server.trustdomain.v1.TrustDomain/"
_LOCAL_AUTHORITY_SERVICE = "/spire.api.server.localauthority.v1.LocalAuthority/"

POLICY: dict[str, frozenset[CallerKind]] = {
    **{
        _AGENT_SERVICE + name: _ADMIN
        for name in (
            "CountAgents",
            "ListAgents",
            "GetAgent",
            "DeleteAgent",
            "BanAgent",
            "CreateJoinToken",
        )
    },
    _AGENT_SERVICE + "AttestAgent": _ANY,
    _AGENT_SERVICE + "RenewAgent": _AGENT,
    _AGENT_SERVICE + "PostStatus": _AGENT,
    _BUNDLE_SERVICE + "GetBundle": _ANY,
    **{
        _BUNDLE_SERVICE + name: _ADMIN
        for name in (
            "AppendBundle",
            "CountBundles",
            "ListFederatedBundles",
            "BatchCreateFederatedBundle",
            "BatchUpdateFederatedBundle",
            "BatchSetFederatedBundle",
            "BatchDeleteFederatedBundle",
        )
    },
    _BUNDLE_SERVICE + "GetFederatedBundle": _ADMIN | _AGENT,
    _BUNDLE_SERVICE + "PublishJWTAuthority": _DOWNSTREAM,
    **{
        _ENTRY_SERVICE + name: _ADMIN
        for name in (
            "CountEntries",
            "ListEntries",
            "GetEntry",
            "BatchCreateEntry",
            "BatchUpdateEntry",
            "BatchDeleteEntry",
        )
    },
    _ENTRY_SERVICE + "GetAuthorizedEntries": _AGENT,
    _ENTRY_SERVICE + "SyncAuthorizedEntries": _AGENT,
    _SVID_SERVICE + "MintX509SVID": _ADMIN,
    _SVID_SERVICE + "MintJWTSVID": _ADMIN,
    _SVID_SERVICE + "BatchNewX509SVID": _AGENT,
    _SVID_SERVICE + "NewJWTSVID": _AGENT,
    _SVID_SERVICE + "NewDownstreamX509CA": _DOWNSTREAM,
    **{
        _TRUST_DOMAIN_SERVICE + name: _ADMIN
        for name in (
            "ListFederationRelationships",
            "GetFederationRelationship",
            "BatchCreateFederationRelationship",
            "BatchUpdateFederationRelationship",
            "BatchDeleteFederationRelationship",
            "RefreshBundle",
        )
    },
    "/spire.api.server.debug.v1.Debug/GetInfo": _LOCAL,
    "/grpc.health.v1.Health/Check": _LOCAL,
    "/grpc.health.v1.Health/Watch": _LOCAL,
}


def allowed(method: str, caller: Caller) -> bool:
    """Whether ``caller`` may call ``method``; unknown methods are refused to everyone."""
    policy = POLICY.get(method)
    if policy is None and method.startswith(_LOCAL_AUTHORITY_SERVICE):
        policy = _ADMIN
    if policy is None:
        return False
    if CallerKind.ANY in policy:
        return True
    return bool(policy & caller.kinds)
