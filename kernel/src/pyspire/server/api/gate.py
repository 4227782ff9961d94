"""Who is calling, and may they call this method: the gates in front of the server's services.

:func:`tcp_gate` serves the agent-facing TCP (TLS) listener. A caller without a client
certificate is anonymous (kind ``any``). A caller presenting an X509-SVID is identified by its
SPIFFE ID:

- an agent ID of our trust domain is an ``agent`` once its SVID is unexpired, its attested node
  exists and is not banned, and the SVID's serial is the node's current serial, or its renewed
  ("new") serial, which then becomes current: the agent has started using its renewed SVID;
- an ID listed in ``admin_ids``, or carried by an entry marked ``admin``, is an ``admin``;
- an ID carried by an entry marked ``downstream`` is a ``downstream`` server.

What a connection proves is worked out once and kept for the connection's lifetime (a client
certificate cannot change on an open TLS connection; an agent with a renewed SVID opens a new
connection): its certificate, SPIFFE ID and, for agents, the outcome of the agent check. The
agent check is trusted again only while the registry still holds the very node record it was
made against (a ban, an eviction or a renewal through any server replaces or drops that record,
so the agent's open connection is refused on its next call), while the SVID is unexpired, and
while the trust epoch (:attr:`ServerContext.trust_epoch`, advanced on every CA or bundle change)
is the one it was made in; otherwise everything is worked out again.

The caller's kinds are then checked against :mod:`pyspire.server.authorization`. A kind is only
worked out when the method admits it: agent checks run only for methods agents may call (and
anonymous callers may not), so an evicted agent can still attest again, and admin entries are
looked up only for admin methods. Everything is answered from the registry cache; the datastore
is read only the first time a node is seen and written only when a renewed SVID becomes
current.

:func:`local_gate` serves the admin unix socket: every caller there is ``local``.
"""

from __future__ import annotations

import functools

__all__ = ["AgentCheck", "TcpGate", "local_gate", "serial_hex", "tcp_gate"]

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import grpclib.server
import structlog
from cryptography import x509

from pyspire.server.authorization import Caller, CallerKind, allowed
from pyspire.server.context import ServerContext
from pyspire.transport.calls import Gate, set_caller
from pyspire.transport.peer import peer_address, peer_certificate, peer_connection
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


@functools.cache
def _may(method: str, kind: CallerKind) -> bool:
    """Whether callers of ``kind`` may call ``method`` (so that it is worth finding out); the
    policy is fixed, so each answer is worked out once."""
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


@dataclass(slots=True)
class _Connection:
    """What one TLS connection proved about its caller (see the module documentation)."""

    certificate_der: bytes | None
    spiffe_id: SpiffeId | None
    address: str
    epoch: int
    not_after: datetime | None = None
    node: AttestedNode | None = None
    """The node record the last successful agent check was made against."""


class TcpGate:
    """The gate of the TCP listener; see the module documentation."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context
        self._agent_check = AgentCheck(context)
        self._connections: WeakKeyDictionary[object, _Connection] = WeakKeyDictionary()

    async def __call__(self, method: str, stream: grpclib.server.Stream[Any, Any]) -> None:
        peer = stream.peer
        connection = peer_connection(peer)
        known = self._connections.get(connection)
        if known is None or known.epoch != self._context.trust_epoch:
            known = self._learn(peer_certificate(peer), peer_address(peer))
            self._connections[connection] = known
        set_caller(await self._identify(method, known))

    def _learn(self, certificate_der: bytes | None, address: str) -> _Connection:
        spiffe_id = None if certificate_der is None else spiffe_id_of(certificate_der)
        return _Connection(certificate_der, spiffe_id, address, self._context.trust_epoch)

    async def identify(self, method: str, certificate_der: bytes | None, address: str) -> Caller:
        """Who is calling ``method``; PermissionDenied when they may not call it."""
        return await self._identify(method, self._learn(certificate_der, address))

    async def _identify(self, method: str, known: _Connection) -> Caller:
        address, certificate_der, spiffe_id = known.address, known.certificate_der, known.spiffe_id
        if certificate_der is None or spiffe_id is None:
            caller = Caller(kinds=_ANY, address=address)
            if not allowed(method, caller):
                raise _refuse(method)
            return caller
        if _may(method, CallerKind.ANY):
            return Caller(
                kinds=_ANY, spiffe_id=spiffe_id, address=address, certificate_der=certificate_der
            )
        kinds = set(_ANY)
        context = self._context
        if _may(method, CallerKind.ADMIN) or _may(method, CallerKind.DOWNSTREAM):
            if spiffe_id in context.admin_ids:
                kinds.add(CallerKind.ADMIN)
            for entry in context.registry.privileged_entries(spiffe_id):
                if entry.admin:
                    kinds.add(CallerKind.ADMIN)
                if entry.downstream:
                    kinds.add(CallerKind.DOWNSTREAM)
        node: AttestedNode | None = None
        if _may(method, CallerKind.AGENT) and is_agent_id(spiffe_id, context.trust_domain):
            node = await self._agent(spiffe_id, known)
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

    async def _agent(self, agent_id: SpiffeId, known: _Connection) -> AttestedNode:
        """The agent's node: the connection's earlier check while it still holds, else a new
        one (PermissionDenied when the agent is not active)."""
        context = self._context
        node = known.node
        if (
            node is not None
            and known.not_after is not None
            and context.clock.now() < known.not_after
            and context.registry.remembered_node(agent_id) is node
        ):
            return node
        known.node = None
        certificate = x509.load_der_x509_certificate(known.certificate_der or b"")
        known.not_after = certificate.not_valid_after_utc
        node = await self._agent_check(agent_id, certificate)
        if context.registry.remembered_node(agent_id) is node:
            known.node = node
        return node


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
