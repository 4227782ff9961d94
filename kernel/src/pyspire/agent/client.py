"""The agent's gRPC client to the server, over SPIFFE mutual TLS.

:class:`ServerClient` implements :class:`~pyspire.agent.server_api.AgentServerApi` for the sync
manager, plus the two calls that give the agent its own SVID (:meth:`ServerClient.attest` and
:meth:`ServerClient.renew`).

Guarantees:

- **The server is who it must be.** Every call, before it sends anything but its headers,
  checks that the server presented an X509-SVID for exactly ``spiffe://<td>/spire/server``
  (TLS already checked that it chains to the bundle); otherwise the call fails with
  :class:`ServerIdentityError` and no request data (join token, CSR) leaves the agent.
- **One connection at a time, replaced when the agent SVID rotates.** Every call once the
  agent has its SVID shares one connection (as SPIRE's agent shares one gRPC connection), so a
  server holds one connection per agent. Python's ``ssl`` cannot swap a client certificate,
  so :meth:`ServerClient.use_identity` retires the connection (and the anonymous one
  attestation used) and the next call opens a new one; a retired connection is closed once
  the calls running on it finish. A new bundle does not reconnect: the server was verified
  at the handshake, and the connection stays while the authorities the old bundle held are
  still in the new one (an authority removed retires it), so its anchors never trust more than
  the bundle does. Once it is lost, a connection made with the new bundle replaces it (which
  also trusts a server SVID from an authority the bundle gained).
- **Errors speak the SDK.** gRPC statuses become SDK errors with the server's message
  (UNAVAILABLE and transport failures → :class:`~pyspire_sdk.errors.UnavailableError`,
  PERMISSION_DENIED → :class:`~pyspire_sdk.errors.PermissionDeniedError`, INVALID_ARGUMENT →
  :class:`~pyspire_sdk.errors.InvalidArgumentError`, NOT_FOUND →
  :class:`~pyspire_sdk.errors.NotFoundError`); anything the server sends that does not parse is
  a :class:`ServerCallError`.
- **Hot messages go through the generated codecs.** An agent asks for SVIDs and entries
  constantly, and a fleet that starts attests all at once, so BatchNewX509SVID, the
  authorized-entries calls and AttestAgent are written and read by
  :mod:`pyspire.proto.gen.codec` (a generic decoder would cost more than the server's work:
  betterproto took 0.3 ms of the agent's CPU per attestation for its two messages);
  their replies arrive as bytes and are decoded here, so a malformed one is a
  :class:`ServerCallError` like any other.

Attestation runs on a connection without a client certificate (the agent may have none yet, or
only an expired one); every other call presents the agent SVID.
"""

from __future__ import annotations

__all__ = [
    "ATTESTATION_TIMEOUT",
    "BROKEN_CONNECTION_PAUSE",
    "DEFAULT_CALL_TIMEOUT",
    "SVID_BATCH_SIZE",
    "SYNC_EARLY_END_ENTRIES",
    "SYNC_IDS_PER_REQUEST",
    "AttestResult",
    "ConnectionBrokeError",
    "ServerCallError",
    "ServerClient",
    "ServerIdentityError",
    "error_for_status",
    "read_batch_new_x509_svid_response",
    "server_id",
]

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpclib.const
import structlog
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.client import Channel, Stream
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from pyspire.agent.entry_set import HeldEntries
from pyspire.agent.held_bundles import HeldBundles
from pyspire.proto.bundle_digest import BUNDLES_DIGEST_HEADER, federated_trust_domains
from pyspire.proto.bundles import decode_bundle
from pyspire.proto.convert import (
    entry_from_proto,
    jwt_svid_from_proto,
    x509_svid_from_proto,
)
from pyspire.proto.entries import SyncPage, read_sync_page
from pyspire.proto.errors import DecodeError
from pyspire.proto.gen.codec import spire_api_server_agent_v1 as agent_wire
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_wire
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.gen.codec.spire_api_server_entry_v1 import EntryRevision
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire.proto.gen.spire.api.server.svid import v1 as svid_pb
from pyspire.proto.messages import EncodedMessage
from pyspire.proto.svids import (
    BatchResult,
    batch_new_x509_svid_request,
)
from pyspire.proto.svids import (
    read_batch_new_x509_svid_response as read_batch_results,
)
from pyspire.transport.grpclib_client import is_connected, open_channel
from pyspire.transport.peer import peer_certificate
from pyspire.transport.tls import ALPN, build_client_context, spiffe_id_of
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PyspireError,
    UnavailableError,
)
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, agent_attestation
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain, server_id

from .server_api import SvidRequest, SvidResult, TrustBundles

DEFAULT_CALL_TIMEOUT = 30.0
"""Seconds any one call to the server may take (attestation excepted)."""

ATTESTATION_TIMEOUT = 120.0
"""Seconds AttestAgent may take, its wait for the server's admission included. In a storm the
server queues attestations (up to 10,000) rather than turn agents away, and refuses a call
only when its slot comes with less than 10 s of its deadline left; with 30 s, an agent behind
20 s of queued work was refused and came back to the end of the queue (1,894 of 2,000 agents
in one storm), where a wait of up to 110 s serves it in its turn."""

BROKEN_CONNECTION_PAUSE = 0.5
"""Seconds before a call whose connection broke is made once more. A server drops the
connection of an agent SVID it cannot verify, which happens when another server sharing its
datastore signed it with a CA this one has not read yet; it then reads the trust bundle again
at once (:meth:`pyspire.server.bundle_feed.BundleFeed.unverified_peer`), and the call made
again after this pause finds it trusting the new CA."""

SVID_BATCH_SIZE = 500
"""At most this many CSRs go in one BatchNewX509SVID request (the server's limit)."""

SYNC_IDS_PER_REQUEST = 500
"""At most this many entry IDs go in one SyncAuthorizedEntries request."""

SYNC_EARLY_END_ENTRIES = 400
"""An agent whose last SyncAuthorizedEntries answer was a whole set of at most this many entries
ends its side of the next call with its first request: the answer will almost surely be a
whole set again (SPIRE's server sends one up to 500 entries), which needs no further request."""

_AGENT = "/spire.api.server.agent.v1.Agent"
_ATTEST_AGENT = f"{_AGENT}/AttestAgent"
_RENEW_AGENT = f"{_AGENT}/RenewAgent"
_GET_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetBundle"
_GET_FEDERATED_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetFederatedBundle"
_GET_AUTHORIZED_ENTRIES = "/spire.api.server.entry.v1.Entry/GetAuthorizedEntries"
_SYNC_AUTHORIZED_ENTRIES = "/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries"
_BATCH_NEW_X509_SVID = "/spire.api.server.svid.v1.SVID/BatchNewX509SVID"
_NEW_JWT_SVID = "/spire.api.server.svid.v1.SVID/NewJWTSVID"

_Send = TypeVar("_Send")
_Recv = TypeVar("_Recv")

_log = structlog.get_logger("pyspire.agent.client")


class ServerIdentityError(UnavailableError):
    """The server did not prove to be ``spiffe://<td>/spire/server``.

    An :class:`~pyspire_sdk.errors.UnavailableError` (retry later: the address may point at the
    right server again), never a permission error: an impostor must not be able to make the
    agent believe it was banned.
    """


class ServerCallError(PyspireError):
    """The server answered with a status that has no SDK error, or with a malformed message.

    ``status`` is the gRPC status name (``"INTERNAL"``, ...), or ``""`` for a malformed answer.
    """

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AttestResult:
    """What a successful attestation gives: the agent SVID (no key) and whether the agent may
    attest again instead of renewing."""

    svid: X509Svid
    reattestable: bool


_ERRORS_BY_STATUS: dict[grpclib.const.Status, type[PyspireError]] = {
    grpclib.const.Status.UNAVAILABLE: UnavailableError,
    grpclib.const.Status.DEADLINE_EXCEEDED: UnavailableError,
    grpclib.const.Status.RESOURCE_EXHAUSTED: UnavailableError,
    grpclib.const.Status.PERMISSION_DENIED: PermissionDeniedError,
    grpclib.const.Status.UNAUTHENTICATED: PermissionDeniedError,
    grpclib.const.Status.INVALID_ARGUMENT: InvalidArgumentError,
    grpclib.const.Status.NOT_FOUND: NotFoundError,
    grpclib.const.Status.ALREADY_EXISTS: AlreadyExistsError,
}


def error_for_status(status: grpclib.const.Status, message: str) -> PyspireError:
    """The SDK error that says what a gRPC ``status`` from the server means."""
    kind = _ERRORS_BY_STATUS.get(status)
    if kind is not None:
        return kind(message)
    return ServerCallError(message, status.name)


def _malformed(what: str, error: Exception) -> ServerCallError:
    return ServerCallError(f"server sent a malformed {what}: {error}")


# -- BatchNewX509SVID replies --------------------------------------------------------------


def _svid_of(result: BatchResult) -> X509Svid | str:
    """The SVID of an OK result, or why it is unusable (judged as
    :func:`~pyspire.proto.convert.x509_svid_from_proto` judges any SVID from the server; an
    expiry no datetime can hold is unusable too)."""
    svid = result[2]
    try:
        return x509_svid_from_proto(svid, "svid")
    except InvalidArgumentError as error:
        return f"malformed SVID from server: {error}"
    except (OverflowError, OSError, ValueError):
        seconds = 0 if svid is None else svid.expires_at
        return f"malformed SVID from server: invalid svid.expires_at: {seconds} is out of range"


class ConnectionBrokeError(UnavailableError):
    """The connection to the server was lost during a call (rather than refused before it)."""


async def _once_more_if_broken(call: Callable[[], Awaitable[_Recv]]) -> _Recv:
    """``call``'s result, made once more after :data:`BROKEN_CONNECTION_PAUSE` when its
    connection broke (:class:`ConnectionBrokeError`)."""
    try:
        return await call()
    except ConnectionBrokeError:
        await asyncio.sleep(BROKEN_CONNECTION_PAUSE)
        return await call()


def _status_error(code: int, message: str) -> str:
    try:
        name = grpclib.const.Status(code).name
    except ValueError:
        name = str(code)
    return f"{name}: {message or name}"


def read_batch_new_x509_svid_response(data: bytes, entry_ids: Sequence[str]) -> list[SvidResult]:
    """The results of an encoded ``BatchNewX509SVIDResponse``, one per entry of ``entry_ids``
    (the entries the request asked for, in order).

    A result without status is OK, as its zero value says. A result that is not OK, or whose
    SVID is unusable (empty chain, no expiry, invalid ID), becomes an
    :class:`~pyspire.agent.server_api.SvidResult` with ``error``. Bytes that do not parse, or
    a result count other than ``len(entry_ids)``, raise :class:`ServerCallError`: the whole
    reply is then untrustworthy.
    """
    try:
        read = read_batch_results(data)
    except DecodeError as error:
        raise _malformed("BatchNewX509SVID response", error) from None
    if len(read) != len(entry_ids):
        raise ServerCallError(f"server answered {len(read)} results to {len(entry_ids)} CSRs")
    results = []
    for entry_id, result in zip(entry_ids, read, strict=True):
        code, message, _ = result
        if code != grpclib.const.Status.OK.value:
            results.append(SvidResult(entry_id, None, _status_error(code, message)))
            continue
        found = _svid_of(result)
        if isinstance(found, str):
            results.append(SvidResult(entry_id, None, found))
        else:
            results.append(SvidResult(entry_id, found))
    return results


def _decoded(reply: EncodedMessage[Any], decode: Callable[[bytes], _Recv]) -> _Recv:
    """A reply's bytes read by a codec; :class:`ServerCallError` when they do not parse."""
    try:
        return decode(reply.data)
    except DecodeError as error:
        raise _malformed("reply", error) from None


def _sync_page(reply: EncodedMessage[Any] | None) -> SyncPage | None:
    """One SyncAuthorizedEntries reply, split into revisions and entry encodings (None: the
    server ended its side)."""
    if reply is None:
        return None
    return _decoded(reply, read_sync_page)


def _offered_digest(stream: Stream[Any, Any]) -> str | None:
    """The bundles digest a pyspire server sends with its SyncAuthorizedEntries answer."""
    metadata = stream.initial_metadata
    if metadata is None:
        return None
    value = metadata.get(BUNDLES_DIGEST_HEADER)
    return value if isinstance(value, str) else None


class _Connection:
    """One channel and the calls running on it; closed when retired and idle.

    ``authorities`` are the DER certificates the server was verified with (None: insecure
    bootstrap, not verified); a ``stale`` connection serves calls while it is open but is
    replaced rather than reopened once lost (the bundle changed since it was made)."""

    def __init__(self, channel: Channel, authorities: frozenset[bytes] | None) -> None:
        self.channel = channel
        self.authorities = authorities
        self.users = 0
        self.retired = False
        self.stale = False
        self.server_certificate: bytes | None = None
        """The DER certificate last found to name the server: the same certificate, on the
        channel's next call, need not be read again."""

    def trusted_by(self, authorities: frozenset[bytes]) -> bool:
        """Whether whatever verified this connection's server is still among ``authorities``."""
        return self.authorities is not None and self.authorities <= authorities

    def retire(self) -> None:
        self.retired = True
        if self.users == 0:
            self.channel.close()

    def release(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            self.channel.close()


def _authorities(bundle: Bundle) -> frozenset[bytes]:
    return frozenset(authority.der for authority in bundle.x509_authorities)


def _insecure_context() -> ssl.SSLContext:
    """A client context that accepts any server certificate: insecure bootstrap only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class ServerClient:
    """The agent's connection to its server; see the module documentation.

    ``bundle`` None means insecure bootstrap: the server's certificate chain is not verified
    (its SPIFFE ID still is) until :meth:`use_bundle` pins one. ``timeout`` bounds every call
    but AttestAgent, which ``attestation_timeout`` bounds.
    """

    def __init__(
        self,
        *,
        trust_domain: TrustDomain,
        address: str,
        port: int,
        bundle: Bundle | None,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        attestation_timeout: float = ATTESTATION_TIMEOUT,
    ) -> None:
        if bundle is not None and bundle.trust_domain != trust_domain:
            raise InvalidArgumentError(
                f"bundle is of trust domain {bundle.trust_domain.name!r}, "
                f"expected {trust_domain.name!r}"
            )
        self._trust_domain = trust_domain
        self._server_id = server_id(trust_domain)
        self._address = address
        self._port = port
        self._timeout = timeout
        self._attestation_timeout = attestation_timeout
        self._bundle = bundle
        self._chain: tuple[bytes, ...] = ()
        self._key: PrivateKeyTypes | None = None
        self._anonymous: _Connection | None = None
        self._authenticated: _Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._held = HeldEntries()
        self._whole_set = False
        self._bundle_reply: tuple[bytes, Bundle] | None = None
        self._held_bundles = HeldBundles()
        self._offered_digest: str | None = None
        self._closed = False

    # -- credentials ------------------------------------------------------------------------

    @property
    def trust_domain(self) -> TrustDomain:
        return self._trust_domain

    @property
    def server_id(self) -> SpiffeId:
        """The ID the server must present."""
        return self._server_id

    @property
    def target(self) -> str:
        """``address:port`` of the server, for messages."""
        return f"{self._address}:{self._port}"

    @property
    def bundle(self) -> Bundle | None:
        """The bundle the server is verified with; None while bootstrapping insecurely."""
        return self._bundle

    @property
    def has_identity(self) -> bool:
        """Whether calls present an agent SVID."""
        return bool(self._chain)

    def use_bundle(self, bundle: Bundle) -> None:
        """Verify the server with ``bundle`` from now on (new connections)."""
        if bundle.trust_domain != self._trust_domain:
            raise InvalidArgumentError(
                f"bundle is of trust domain {bundle.trust_domain.name!r}, "
                f"expected {self._trust_domain.name!r}"
            )
        if not bundle.x509_authorities:
            raise InvalidArgumentError("bundle has no X.509 authority to verify the server with")
        if bundle == self._bundle:
            return
        self._bundle = bundle
        authorities = _authorities(bundle)
        for connection in (self._anonymous, self._authenticated):
            if connection is not None:
                connection.stale = True
        self._retire(
            anonymous=self._anonymous is not None and not self._anonymous.trusted_by(authorities),
            authenticated=self._authenticated is not None
            and not self._authenticated.trusted_by(authorities),
        )

    def use_identity(self, chain: Sequence[bytes], private_key: PrivateKeyTypes) -> None:
        """Present this agent SVID (leaf first, DER) from now on (new connections)."""
        if not chain:
            raise InvalidArgumentError("the agent SVID chain is empty")
        chain = tuple(chain)
        if chain == self._chain and private_key is self._key:
            return
        self._chain = chain
        self._key = private_key
        # Attestation is over: its anonymous connection is no longer needed either.
        self._retire(anonymous=True, authenticated=True)

    def forget_identity(self) -> None:
        """Stop presenting an agent SVID (calls other than attestation then fail)."""
        self._chain = ()
        self._key = None
        self._retire(anonymous=False, authenticated=True)

    def _retire(self, *, anonymous: bool, authenticated: bool) -> None:
        if anonymous and self._anonymous is not None:
            self._anonymous.retire()
            self._anonymous = None
        if authenticated and self._authenticated is not None:
            self._authenticated.retire()
            self._authenticated = None

    async def close(self) -> None:
        """Close every connection; calls after this fail."""
        self._closed = True
        self._retire(anonymous=True, authenticated=True)
        await asyncio.sleep(0)

    async def _connection(self, authenticated: bool) -> _Connection:
        if self._closed:
            raise UnavailableError("the server client is closed")
        async with self._connect_lock:
            current = self._authenticated if authenticated else self._anonymous
            if current is not None and current.stale and not is_connected(current.channel):
                self._retire(anonymous=not authenticated, authenticated=authenticated)
                current = None
            if current is not None:
                return current
            bundle = self._bundle
            if authenticated:
                if not self._chain or self._key is None:
                    raise PermissionDeniedError(
                        "the agent has no SVID yet: it must attest before calling the server"
                    )
                if bundle is None:
                    raise UnavailableError(
                        "the server bundle is not known yet: fetch and pin it before "
                        "presenting the agent SVID"
                    )
                context = await asyncio.to_thread(
                    build_client_context,
                    [a.der for a in bundle.x509_authorities],
                    self._chain,
                    self._key,
                )
            elif bundle is None:
                context = _insecure_context()
            else:
                context = await asyncio.to_thread(
                    build_client_context, [a.der for a in bundle.x509_authorities]
                )
            connection = _Connection(
                open_channel(self._address, self._port, ssl=context),
                None if bundle is None else _authorities(bundle),
            )
            if authenticated:
                # Calls with the agent SVID need no anonymous connection beside this one.
                self._retire(anonymous=True, authenticated=False)
                self._authenticated = connection
            else:
                self._anonymous = connection
            return connection

    # -- one call ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, method: str) -> Iterator[None]:
        try:
            yield
        except GRPCError as error:
            message = error.message or f"{error.status.name} from {method}"
            raise error_for_status(error.status, message) from None
        except ssl.SSLCertVerificationError as error:
            raise UnavailableError(
                f"cannot verify the server at {self.target} with the trust bundle: "
                f"{error.verify_message or error.reason}"
            ) from None
        except (StreamTerminatedError, ProtocolError) as error:
            raise ConnectionBrokeError(
                f"connection to the server at {self.target} broke: {error}"
            ) from None
        except (OSError, TimeoutError, ConnectionError) as error:
            reason = str(error) or type(error).__name__
            raise UnavailableError(f"cannot reach the server at {self.target}: {reason}") from None

    def _check_server(self, stream: Stream[Any, Any], connection: _Connection) -> None:
        certificate = peer_certificate(stream.peer)
        if certificate is None:
            raise ServerIdentityError(f"the server at {self.target} presented no certificate")
        if certificate == connection.server_certificate:
            return  # already found to name the server
        try:
            presented = spiffe_id_of(certificate)
        except PermissionDeniedError as error:
            raise ServerIdentityError(
                f"the server at {self.target} did not present an X509-SVID: {error}"
            ) from None
        if presented != self._server_id:
            raise ServerIdentityError(
                f"the server at {self.target} presented {str(presented)!r}, "
                f"expected {str(self._server_id)!r}"
            )
        connection.server_certificate = certificate

    @contextlib.asynccontextmanager
    async def _call(
        self,
        method: str,
        cardinality: grpclib.const.Cardinality,
        request_type: type[_Send],
        reply_type: type[_Recv],
        *,
        authenticated: bool,
        seconds: float | None = None,
    ) -> AsyncIterator[Stream[_Send, _Recv]]:
        """One call on the right connection, bounded by ``seconds`` (the client's ``timeout``
        when None).

        Only a limit given as ``seconds`` (AttestAgent's) is also sent as grpc-timeout: the
        server's admission refuses an attestation too close to its end before the attestor
        spends a one-time join token, so it must know the end."""
        connection = await self._connection(authenticated)
        connection.users += 1
        try:
            # The call's time limit is kept here, not sent as grpc-timeout: a remaining time
            # differs at every call, so the server would decode a new HPACK literal, add it to
            # its header table and set a timer for each call, for answers made from memory.
            with self._translated(method):
                async with (
                    asyncio.timeout(self._timeout if seconds is None else seconds),
                    connection.channel.request(
                        method, cardinality, request_type, reply_type, timeout=seconds
                    ) as stream,
                ):
                    await stream.send_request()
                    self._check_server(stream, connection)
                    yield stream
        finally:
            connection.release()

    async def _unary(self, method: str, request: Any, reply_type: type[_Recv]) -> _Recv:
        """One unary call, made once more (grpclib opens a new connection) after
        :data:`BROKEN_CONNECTION_PAUSE` when the connection broke under it: the server may drop
        a connection while either side replaces its TLS identity, or while it does not trust
        the agent SVID's CA yet, and every unary call of the agent is safe to repeat (a second
        SVID or renewal replaces one the agent never received)."""
        return await _once_more_if_broken(lambda: self._unary_once(method, request, reply_type))

    async def _unary_once(self, method: str, request: Any, reply_type: type[_Recv]) -> _Recv:
        async with self._call(
            method,
            grpclib.const.Cardinality.UNARY_UNARY,
            type(request),
            reply_type,
            authenticated=True,
        ) as stream:
            await stream.send_message(request, end=True)
            reply = await stream.recv_message()
        if reply is None:
            raise ServerCallError(f"server ended {method} without an answer")
        return reply

    # -- the agent's own SVID ---------------------------------------------------------------

    async def attest(
        self, plugin_name: str, node_attestor: AgentNodeAttestor, csr_der: bytes
    ) -> AttestResult:
        """Attest this node with ``node_attestor`` (registered as ``plugin_name``) and get an
        agent SVID for the key of ``csr_der``.

        Runs AttestAgent: sends the attestation data and the CSR, answers every challenge with
        the attestor, then ends the request stream once the server sent its result. Errors of
        the attestor propagate unchanged; the server's refusal is a
        :class:`~pyspire_sdk.errors.PermissionDeniedError`. The attestor's attestation scope
        (a listener the server calls back, say) lasts from before its payload until the
        server's verdict.
        """
        async with agent_attestation(node_attestor):
            return await self._attest(plugin_name, node_attestor, csr_der)

    async def _attest(
        self, plugin_name: str, node_attestor: AgentNodeAttestor, csr_der: bytes
    ) -> AttestResult:
        payload = await node_attestor.attestation_payload()
        first = agent_wire.AttestAgentRequest(
            params=agent_wire.AttestAgentRequest_Params(
                data=types_wire.AttestationData(type=plugin_name, payload=payload),
                params=agent_wire.AgentX509SVIDParams(csr=csr_der),
            )
        )
        result: agent_wire.AttestAgentResponse_Result | None = None
        async with self._call(
            _ATTEST_AGENT,
            grpclib.const.Cardinality.STREAM_STREAM,
            agent_wire.AttestAgentRequest,
            EncodedMessage,
            authenticated=False,
            seconds=self._attestation_timeout,
        ) as stream:
            await stream.send_message(first)
            while result is None:
                reply = await stream.recv_message()
                if reply is None:
                    # A refusal after a challenge comes in the trailers: raise it, not "no
                    # result". grpclib reads trailers only once our side is ended.
                    await stream.end()
                    await stream.recv_trailing_metadata()
                    raise ServerCallError("server ended AttestAgent without a result")
                response = _decoded(reply, agent_wire.decode_AttestAgentResponse)
                if response.challenge is not None:
                    answer = await node_attestor.answer_challenge(response.challenge)
                    await stream.send_message(
                        agent_wire.AttestAgentRequest(challenge_response=answer)
                    )
                elif response.result is not None:
                    result = response.result
                else:
                    raise ServerCallError("server sent an AttestAgent response with no step")
            await stream.end()
            if await stream.recv_message() is not None:
                raise ServerCallError("server sent more after the AttestAgent result")
        try:
            svid = x509_svid_from_proto(result.svid, "result.svid")
        except InvalidArgumentError as error:
            raise _malformed("attestation result", error) from None
        _log.info("node attested", agent_id=str(svid.spiffe_id), attestor=plugin_name)
        return AttestResult(svid=svid, reattestable=result.reattestable)

    async def renew(self, csr_der: bytes) -> X509Svid:
        """A new agent SVID for the key of ``csr_der`` (RenewAgent), asked with the current
        one. :class:`~pyspire_sdk.errors.PermissionDeniedError` when the server refuses the
        agent (banned, evicted, must re-attest)."""
        reply = await self._unary(
            _RENEW_AGENT,
            agent_pb.RenewAgentRequest(params=agent_pb.AgentX509SvidParams(csr=csr_der)),
            agent_pb.RenewAgentResponse,
        )
        try:
            return x509_svid_from_proto(reply.svid, "svid")
        except InvalidArgumentError as error:
            raise _malformed("RenewAgent response", error) from None

    # -- AgentServerApi ---------------------------------------------------------------------

    async def fetch_bundles(self, entries: Sequence[RegistrationEntry]) -> TrustBundles:
        """Our bundle and those of the trust domains ``entries`` federate with.

        Answered from the bundles held when the digest the server offered with the
        SyncAuthorizedEntries answer just received is theirs (:class:`HeldBundles`): a sync
        with nothing changed is then one call. Otherwise (a server that offers none, such as
        SPIRE's; a bundle that changed) every bundle is fetched, and held for the next sync.
        """
        offered, self._offered_digest = self._offered_digest, None
        federates_with = federated_trust_domains(entries, self._trust_domain)
        held = self._held_bundles.current(offered, federates_with)
        if held is not None:
            return held
        own = await self._own_answer()
        answers = {name: await self._federated_answer(name) for name in federates_with}
        self._held_bundles.hold(own, answers)
        federated: dict[TrustDomain, Bundle] = {}
        for name, (_, found) in answers.items():
            if found is None:
                _log.debug(
                    "server has no bundle for a federated trust domain", trust_domain=str(name)
                )
            else:
                federated[name] = found
        return TrustBundles(own[1], federated)

    async def fetch_bundle(self) -> Bundle:
        """Our trust domain's bundle (GetBundle), over the authenticated connection when the
        agent has an SVID, else anonymously. The answer is held for the next sync
        (:meth:`fetch_bundles`), which does not fetch it again while the server's digest
        says it is current."""
        answer = await self._own_answer()
        self._held_bundles.hold_own(answer)
        return answer[1]

    async def _own_answer(self) -> tuple[bytes, Bundle]:
        """GetBundle's answer: its bytes and our bundle (decoded only when the bytes changed)."""
        async with self._call(
            _GET_BUNDLE,
            grpclib.const.Cardinality.UNARY_UNARY,
            bundle_pb.GetBundleRequest,
            EncodedMessage,
            authenticated=self.has_identity,
        ) as stream:
            await stream.send_message(bundle_pb.GetBundleRequest(), end=True)
            reply = await stream.recv_message()
        if reply is None:
            raise ServerCallError("server ended GetBundle without an answer")
        last = self._bundle_reply
        if last is not None and last[0] == reply.data:
            return last
        bundle = self._parse_bundle(reply, "bundle")
        if bundle.trust_domain != self._trust_domain:
            raise ServerCallError(
                f"server sent the bundle of {bundle.trust_domain.name!r}, "
                f"expected {self._trust_domain.name!r}"
            )
        self._bundle_reply = (reply.data, bundle)
        return self._bundle_reply

    async def fetch_federated_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        """A federated trust domain's bundle (GetFederatedBundle), None when the server has
        none."""
        return (await self._federated_answer(trust_domain))[1]

    async def _federated_answer(
        self, trust_domain: TrustDomain
    ) -> tuple[bytes | None, Bundle | None]:
        """GetFederatedBundle's answer: its bytes and the bundle, (None, None) for NotFound."""
        try:
            reply = await self._unary(
                _GET_FEDERATED_BUNDLE,
                bundle_pb.GetFederatedBundleRequest(trust_domain=trust_domain.name),
                EncodedMessage,
            )
        except NotFoundError:
            return None, None
        bundle = self._parse_bundle(reply, "federated bundle")
        if bundle.trust_domain != trust_domain:
            raise ServerCallError(
                f"server sent the bundle of {bundle.trust_domain.name!r}, "
                f"expected {trust_domain.name!r}"
            )
        return reply.data, bundle

    @staticmethod
    def _parse_bundle(reply: EncodedMessage[Any], what: str) -> Bundle:
        try:
            return decode_bundle(reply.data, "bundle")
        except InvalidArgumentError as error:
            raise _malformed(what, error) from None

    async def fetch_authorized_entries(self) -> list[RegistrationEntry]:
        """Every entry this agent may issue SVIDs for.

        Uses SyncAuthorizedEntries: a small set arrives in full, and only the entries whose
        encoding this client does not hold are decoded; a large one arrives as revisions first,
        and only the entries this client does not hold at that revision are asked for
        (:class:`~pyspire.agent.entry_set.HeldEntries` keeps them between calls). Falls back
        to GetAuthorizedEntries when the server does not implement the sync call. The digest
        of the bundles the server offers with its answer is noted for :meth:`fetch_bundles`.
        """
        self._offered_digest = None
        try:
            # Only reads: safe to make once more when the connection broke (see _unary).
            return await _once_more_if_broken(self._sync_authorized_entries)
        except ServerCallError as error:
            if error.status != grpclib.const.Status.UNIMPLEMENTED.name:
                raise
        self._held.clear()
        return await self._get_authorized_entries()

    @property
    def held_entries(self) -> HeldEntries:
        """The entries kept between syncs (a sync decodes only the ones that changed)."""
        return self._held

    async def _get_authorized_entries(self) -> list[RegistrationEntry]:
        reply = await self._unary(
            _GET_AUTHORIZED_ENTRIES, entry_wire.GetAuthorizedEntriesRequest(), EncodedMessage
        )
        return self._parse_entries(
            _decoded(reply, entry_wire.decode_GetAuthorizedEntriesResponse).entries
        )

    @staticmethod
    def _parse_entries(messages: Sequence[types_wire.Entry]) -> list[RegistrationEntry]:
        entries = []
        for index, message in enumerate(messages):
            try:
                entries.append(entry_from_proto(message, f"entries[{index}]"))
            except InvalidArgumentError as error:
                raise _malformed("entry", error) from None
        return entries

    async def _sync_authorized_entries(self) -> list[RegistrationEntry]:
        """SyncAuthorizedEntries, ending our side with the first request when the last answer
        was a whole set of at most :data:`SYNC_EARLY_END_ENTRIES` entries (so the server reads
        one frame, not a second one to end the call); should the answer come as revisions
        then, which need requests this stream can no longer carry, the call is made again."""
        end_early = self._whole_set and len(self._held) <= SYNC_EARLY_END_ENTRIES
        entries = await self._sync_call(end_early=end_early)
        if entries is not None:
            return entries
        again = await self._sync_call(end_early=False)
        if again is None:  # only a call that ended early returns None
            raise ServerCallError("server answered SyncAuthorizedEntries with nothing usable")
        return again

    async def _sync_call(self, *, end_early: bool) -> list[RegistrationEntry] | None:
        """One SyncAuthorizedEntries call; None when it ended early and was answered with
        revisions."""
        self._whole_set = False
        async with self._call(
            _SYNC_AUTHORIZED_ENTRIES,
            grpclib.const.Cardinality.STREAM_STREAM,
            entry_wire.SyncAuthorizedEntriesRequest,
            EncodedMessage,
            authenticated=True,
        ) as stream:
            await stream.send_message(entry_wire.SyncAuthorizedEntriesRequest(), end=end_early)
            first = _sync_page(await stream.recv_message())
            if first is None:
                raise ServerCallError("server ended SyncAuthorizedEntries without an answer")
            self._offered_digest = _offered_digest(stream)
            if not first.revisions:
                # Everything at once: the server has ended its side.
                if first.more:
                    raise ServerCallError(
                        "server sent a partial SyncAuthorizedEntries answer without revisions"
                    )
                if not end_early:
                    await stream.end()
                self._whole_set = True
                return self._held_call(lambda: self._held.replace(first.entries))
            if end_early:
                # The server sends the rest of the revisions and ends: read them to the end.
                while await stream.recv_message() is not None:
                    pass
                return None
            revisions: list[EntryRevision] = []
            page: SyncPage | None = first
            while page is not None:
                if page.entries:
                    raise ServerCallError("server sent entries among the entry revisions")
                revisions.extend(page.revisions)
                if not page.more:
                    break
                page = _sync_page(await stream.recv_message())
                if page is None:
                    raise ServerCallError("server ended SyncAuthorizedEntries between pages")
            wanted = self._held_call(lambda: self._held.wanted(revisions))
            encodings = await self._fetch_entries(stream, wanted)
            await stream.end()
        fetched = self._held_call(lambda: self._held.decode_fetched(encodings))
        entries, missing = self._held_call(lambda: self._held.apply(revisions, fetched))
        for entry_id in missing:
            _log.warning("server did not send an authorized entry it listed", entry_id=entry_id)
        _log.debug("authorized entries synced", entries=len(entries), fetched=len(fetched))
        return entries

    @staticmethod
    def _held_call(action: Callable[[], _Recv]) -> _Recv:
        """Run an update of the held entries; an entry that does not decode is a malformed
        answer."""
        try:
            return action()
        except InvalidArgumentError as error:
            raise _malformed("entry", error) from None

    async def _fetch_entries(self, stream: Stream[Any, Any], wanted: list[str]) -> list[bytes]:
        """The encodings of the entries ``wanted`` (ids), asked for on a SyncAuthorizedEntries
        ``stream``.

        Every request goes out before the first answer is read, so the server answers them
        back to back instead of waiting a round trip for each; it answers in request order,
        each in pages until one without ``more``.
        """
        requests = [
            wanted[start : start + SYNC_IDS_PER_REQUEST]
            for start in range(0, len(wanted), SYNC_IDS_PER_REQUEST)
        ]
        for ids in requests:
            await stream.send_message(entry_wire.SyncAuthorizedEntriesRequest(ids=ids))
        fetched: list[bytes] = []
        for _ in requests:
            while True:
                answer = _sync_page(await stream.recv_message())
                if answer is None:
                    raise ServerCallError(
                        "server ended SyncAuthorizedEntries before sending the entries asked"
                    )
                if answer.revisions:
                    raise ServerCallError("server sent entry revisions among the entries asked")
                fetched.extend(answer.entries)
                if not answer.more:
                    break
        return fetched

    async def new_x509_svids(self, requests: Sequence[SvidRequest]) -> list[SvidResult]:
        """Sign CSRs for entries (BatchNewX509SVID, at most :data:`SVID_BATCH_SIZE` a call),
        one result per request, in order. A per-entry refusal is a result with ``error``.

        Replies are read by :func:`read_batch_new_x509_svid_response`."""
        results: list[SvidResult] = []
        for start in range(0, len(requests), SVID_BATCH_SIZE):
            batch = requests[start : start + SVID_BATCH_SIZE]
            request = batch_new_x509_svid_request([(item.entry_id, item.csr_der) for item in batch])
            reply = await self._unary(_BATCH_NEW_X509_SVID, EncodedMessage(request), EncodedMessage)
            results.extend(
                read_batch_new_x509_svid_response(reply.data, [item.entry_id for item in batch])
            )
        return results

    async def new_jwt_svid(self, entry_id: str, audience: Sequence[str]) -> JwtSvid:
        """A JWT-SVID for an entry and these audiences (NewJWTSVID)."""
        reply = await self._unary(
            _NEW_JWT_SVID,
            svid_pb.NewJwtsvidRequest(entry_id=entry_id, audience=list(audience)),
            svid_pb.NewJwtsvidResponse,
        )
        try:
            return jwt_svid_from_proto(reply.svid, audience, "svid")
        except InvalidArgumentError as error:
            raise _malformed("NewJWTSVID response", error) from None
