"""What the agent asks of the server, as the sync manager sees it.

:mod:`pyspire.agent.client` implements this over gRPC with mTLS; tests of the sync manager use an
in-memory fake. Each method raises :class:`~pyspire_sdk.errors.UnavailableError` when the server
cannot be reached (retry with backoff) and
:class:`~pyspire_sdk.errors.PermissionDeniedError` when the server refuses the agent (banned,
evicted: the agent must stop serving what it can no longer renew).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.spiffeid import TrustDomain


@dataclass(frozen=True)
class SvidRequest:
    """One CSR for one entry (the key was generated on this node)."""

    entry_id: str
    csr_der: bytes


@dataclass(frozen=True)
class SvidResult:
    """The server's answer to one :class:`SvidRequest`: an SVID (no private key) or why not."""

    entry_id: str
    svid: X509Svid | None
    error: str = ""


class AgentServerApi(Protocol):
    """The server calls the agent makes once it has its own SVID."""

    async def fetch_authorized_entries(self) -> list[RegistrationEntry]:
        """Every entry this agent may issue SVIDs for (SyncAuthorizedEntries or Get)."""
        ...

    async def fetch_bundle(self) -> Bundle:
        """Our trust domain's bundle."""
        ...

    async def fetch_federated_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        """A federated trust domain's bundle, or None when the server has none."""
        ...

    async def new_x509_svids(self, requests: Sequence[SvidRequest]) -> list[SvidResult]:
        """Sign CSRs for entries (BatchNewX509SVID), one result per request, in order."""
        ...

    async def new_jwt_svid(self, entry_id: str, audience: Sequence[str]) -> JwtSvid:
        """A JWT-SVID for an entry and these audiences (NewJWTSVID)."""
        ...
