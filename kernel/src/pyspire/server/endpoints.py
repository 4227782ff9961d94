"""The server's two listeners and which services each serves.

Agents and remote admins reach the TCP listener (mTLS): every call passes the TCP gate, which
identifies the caller from its SVID and applies the authorization policy. Operators reach the
admin unix socket: every caller there is ``local``. Both listeners share one instance of each
service, so per-IP rate limits and encoded-entry caches are shared too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspire.server.api.admission import AttestationAdmission
from pyspire.server.api.agent import AgentService
from pyspire.server.api.bundle import BundleService, encode_bundle
from pyspire.server.api.bundle_answers import BundleAnswers
from pyspire.server.api.debug import DebugService
from pyspire.server.api.entry import EntryService
from pyspire.server.api.gate import local_gate, tcp_gate
from pyspire.server.api.health import HealthService
from pyspire.server.api.localauthority import LocalAuthorityService
from pyspire.server.api.svid import SvidService
from pyspire.server.api.trustdomain import TrustDomainService
from pyspire.server.context import ServerContext
from pyspire.telemetry.audit import AuditLog
from pyspire.transport.calls import InFlight, WithCallContext
from pyspire.transport.limits import ConnectionLimits


@dataclass(frozen=True)
class ServerServices:
    """One instance of every service of the server."""

    agent: AgentService
    bundle: BundleService
    entry: EntryService
    svid: SvidService
    debug: DebugService
    health: HealthService
    trust_domain: TrustDomainService
    local_authority: LocalAuthorityService

    @classmethod
    def build(
        cls, context: ServerContext, *, admission: AttestationAdmission | None = None
    ) -> ServerServices:
        # The Entry service offers agents the digest of the bundle answers the Bundle service
        # keeps, so an agent with nothing new skips fetching them.
        bundles = BundleAnswers(context, encode_bundle)
        return cls(
            agent=AgentService(context, admission=admission),
            bundle=BundleService(context, bundles),
            entry=EntryService(context, bundles=bundles),
            svid=SvidService(context),
            debug=DebugService(context),
            health=HealthService(context),
            trust_domain=TrustDomainService(context),
            local_authority=LocalAuthorityService(context),
        )

    def api(self) -> Sequence[Any]:
        """The services of the agent and admin APIs."""
        return (self.agent, self.bundle, self.entry, self.svid, self.trust_domain)


def tcp_servables(
    services: ServerServices,
    context: ServerContext,
    in_flight: InFlight,
    *,
    limits: ConnectionLimits,
    audit: AuditLog | None = None,
) -> list[WithCallContext]:
    """What the TCP listener serves: the API, each call through the TCP gate, measured (and
    audited with ``audit``)."""
    gate = tcp_gate(context)
    return [
        WithCallContext(
            service,
            gate,
            in_flight,
            request_timeout=limits.request_timeout,
            metrics=context.metrics,
            audit=audit,
        )
        for service in services.api()
    ]


def admin_servables(
    services: ServerServices,
    context: ServerContext,
    in_flight: InFlight,
    *,
    limits: ConnectionLimits,
    audit: AuditLog | None = None,
) -> list[WithCallContext]:
    """What the admin socket serves: the API plus Debug, Health and LocalAuthority, every
    caller local,
    measured (and audited with ``audit``)."""
    gate = local_gate(context)
    return [
        WithCallContext(
            service,
            gate,
            in_flight,
            request_timeout=limits.request_timeout,
            metrics=context.metrics,
            audit=audit,
        )
        for service in (
            *services.api(),
            services.debug,
            services.health,
            services.local_authority,
        )
    ]
