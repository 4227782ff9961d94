"""Who is calling, and may they call this method: the gates in front of the server's services.

:func:`tcp_gate` serves the agent-facing TCP (TLS) listener. A caller without a client
certificate is anonymous (kind ``any``). A caller presenting an X509-SVID is identified by its
SPIFFE ID:

- an agent ID of our trust domain is an ``agent`` once its SVID is unexpired, its attested node
  exists and is not banned, and the SVID's serial is the node's current serial, or its renewed
  ("new") serial, which then becomes current: the agent has started using its renewed SVID;
- an ID listed in ``admin_ids``, or carried by an entry marked ``admin``, is an ``admin``;
- an ID carried by an entry marked ``downstream`` is a ``downstream`` server.

The caller's kinds are then checked against :mod:`pyspire.server.authorization`. A kind is only
worked out when the method admits it: agent checks run only for methods agents may call (and
anonymous callers may not), so an evicted agent can still attest again, and admin entries are
looked up only for admin methods. Everything is answered from the registry cache; the datastore
is read only the first time a node is seen and written only when a renewed SVID becomes
current.

:func:`local_gate` serves the admin unix socket: every caller there is ``local``.
"""

from __future__ import annotations

__all__ = ["AgentCheck", "TcpGate", "local_gate", "serial_hex", "tcp_gate"]

from dataclasses import replace
from typing import Any

import grpclib.server
import structlog
from cryptography import x509

from pyspire.server.authorization import Caller, CallerKind, allowed
from pyspire.server.context import ServerContext
from pyspire.transport.calls import Gate, set_caller
from pyspire.transport.peer import peer_address, peer_certificate
from pyspire.transport.tls import spiffe_id_of
from pyspire_sdk.errors import PermissionDeniedError
from pyspire_sdk.model import AttestedNode
from pyspire_sdk.plugins.node_attestor import is_agent_id
from pyspire_sdk.spiffeid import SpiffeId

_ANY = frozenset({CallerKind.ANY})
_LOCAL = frozenset({CallerKind.LOCAL})

_NEW_SVID_ACTIVATION = frozenset(
    {
        "x509_svid_serial_number",
        "x509_svid_expires_at",
        "new_x509_svid_serial_number",
        "new_x509_svid_expires_at",
    }
)

_log = structlog.get_logger("pyspire.server.gate")


def serial_hex(certificate: x509.Certificate) -> str:
    """A certificate's serial number as stored on attested nodes: lower-case hex, no prefix."""
    return format(certificate.serial_number, "x")


def _may(method: str, kind: CallerKind) -> bool:
    """Whether callers of ``kind`` may call ``method`` (so that it is worth finding out)."""
    return allowed(method, Caller(kinds=frozenset({kind})))


def _refuse(method: str) -> PermissionDeniedError:
    return PermissionDeniedError(f"caller is not authorized to call {method}")


class AgentCheck:
    """Decides whether an agent SVID belongs to an active agent (SPIRE's agent authorizer)."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    async def __call__(self, agent_id: SpiffeId, certificate: x509.Certificate) -> AttestedNode:
        """The agent's node when the SVID is its current (or renewed) one; PermissionDenied
        naming the reason otherwise (expired, not attested, banned, serial mismatch)."""
        context = self._context
        if context.clock.now() >= certificate.not_valid_after_utc:
            raise PermissionDeniedError(f"agent {str(agent_id)!r} SVID is expired")
        serial = serial_hex(certificate)
        registry = context.registry
        for attempt in range(2):
            node = await registry.attested_node(agent_id)
            if node is not None and not node.banned:
                if node.x509_svid_serial_number == serial:
                    return node
                if node.new_x509_svid_serial_number == serial:
                    return await self._activate_new_svid(node)
            if attempt == 0:
                # The remembered record may predate a write made elsewhere: read it again once.
                registry.forget_node(agent_id)
        if node is None:
            raise PermissionDeniedError(f"agent {str(agent_id)!r} is not attested")
        if node.banned or not node.x509_svid_serial_number:
            raise PermissionDeniedError(f"agent {str(agent_id)!r} is banned")
        raise PermissionDeniedError(
            f"agent {str(agent_id)!r} SVID is not active: expected serial number "
            f"{node.x509_svid_serial_number!r}, has {serial!r} (evicted or superseded)"
        )

    async def _activate_new_svid(self, node: AttestedNode) -> AttestedNode:
        activated = replace(
            node,
            x509_svid_serial_number=node.new_x509_svid_serial_number,
            x509_svid_expires_at=node.new_x509_svid_expires_at,
            new_x509_svid_serial_number="",
            new_x509_svid_expires_at=None,
        )
        stored = await self._context.datastore.update_attested_node(activated, _NEW_SVID_ACTIVATION)
        self._context.registry.remember_node(stored)
        _log.info(
            "agent renewed SVID activated",
            agent_id=str(node.spiffe_id),
            serial_number=stored.x509_svid_serial_number,
        )
        return stored


class TcpGate:
    """The gate of the TCP listener; see the module documentation."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context
        self._agent_check = AgentCheck(context)

    async def __call__(self, method: str, stream: grpclib.server.Stream[Any, Any]) -> None:
        caller = await self.identify(
            method, peer_certificate(stream.peer), peer_address(stream.peer)
        )
        set_caller(caller)

    async def identify(self, method: str, certificate_der: bytes | None, address: str) -> Caller:
        """Who is calling ``method``; PermissionDenied when they may not call it."""
        if certificate_der is None:
            caller = Caller(kinds=_ANY, address=address)
            if not allowed(method, caller):
                raise _refuse(method)
            return caller
        spiffe_id = spiffe_id_of(certificate_der)
        anonymous = Caller(
            kinds=_ANY, spiffe_id=spiffe_id, address=address, certificate_der=certificate_der
        )
        if allowed(method, anonymous):
            return anonymous
        kinds = set(_ANY)
        context = self._context
        if _may(method, CallerKind.ADMIN) or _may(method, CallerKind.DOWNSTREAM):
            if spiffe_id in context.admin_ids:
                kinds.add(CallerKind.ADMIN)
            for entry in context.registry.entries_with_spiffe_id(spiffe_id):
                if entry.admin:
                    kinds.add(CallerKind.ADMIN)
                if entry.downstream:
                    kinds.add(CallerKind.DOWNSTREAM)
        node: AttestedNode | None = None
        if _may(method, CallerKind.AGENT) and is_agent_id(spiffe_id, context.trust_domain):
            certificate = x509.load_der_x509_certificate(certificate_der)
            node = await self._agent_check(spiffe_id, certificate)
            kinds.add(CallerKind.AGENT)
        caller = Caller(
            kinds=frozenset(kinds),
            spiffe_id=spiffe_id,
            node=node,
            address=address,
            certificate_der=certificate_der,
        )
        if not allowed(method, caller):
            raise _refuse(method)
        return caller


def tcp_gate(context: ServerContext) -> Gate:
    """The gate for the agent-facing TCP (TLS) listener."""
    return TcpGate(context)


def local_gate(context: ServerContext) -> Gate:
    """The gate for the admin unix socket: every caller is ``local``; unknown methods are
    refused."""

    async def gate(method: str, stream: grpclib.server.Stream[Any, Any]) -> None:
        caller = Caller(kinds=_LOCAL)
        if not allowed(method, caller):
            raise _refuse(method)
        set_caller(caller)

    return gate
