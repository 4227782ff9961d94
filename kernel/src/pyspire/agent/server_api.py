"""What the agent asks of the server, as the sync manager sees it.

:mod:`pyspire.agent.client` implements this over gRPC with mTLS; tests of the sync manager use an
in-memory fake. Each method raises :class:`~pyspire_sdk.errors.UnavailableError` when the server
cannot be reached (retry with backoff) and
:class:`~pyspire_sdk.errors.PermissionDeniedError` when the server refuses the agent (banned,
evicted: the agent must stop serving what it can no longer renew).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from pyspire.proto.bundle_digest import federated_trust_domains
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


_log = structlog.get_logger("pyspire.agent.server_api")


@dataclass(frozen=True)
class TrustBundles:
    """What a sync fetches after the entries: our bundle, and the bundles the server holds of
    the trust domains the entries federate with (one it has none of is left out)."""

    bundle: Bundle
    federated: Mapping[TrustDomain, Bundle]


class AgentServerApi(Protocol):
    """The server calls the agent makes once it has its own SVID."""

    async def fetch_authorized_entries(self) -> list[RegistrationEntry]:
        """Every entry this agent may issue SVIDs for (SyncAuthorizedEntries or Get)."""
        ...

    async def fetch_bundle(self) -> Bundle:
        """Our trust domain's bundle."""
        ...

    async def fetch_bundles(self, entries: Sequence[RegistrationEntry]) -> TrustBundles:
        """Our bundle and those of the trust domains ``entries`` (the ones the last
        :meth:`fetch_authorized_entries` returned) federate with; an implementation may answer
        from what it holds when the server said nothing changed since it fetched them."""
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


async def fetch_each_bundle(
    api: AgentServerApi, entries: Sequence[RegistrationEntry]
) -> TrustBundles:
    """:meth:`AgentServerApi.fetch_bundles` by asking the server for every bundle."""
    bundle = await api.fetch_bundle()
    federated: dict[TrustDomain, Bundle] = {}
    for trust_domain in federated_trust_domains(entries, bundle.trust_domain):
        found = await api.fetch_federated_bundle(trust_domain)
        if found is None:
            _log.debug(
                "server has no bundle for a federated trust domain",
                trust_domain=str(trust_domain),
            )
            continue
        federated[trust_domain] = found
    return TrustBundles(bundle, federated)
