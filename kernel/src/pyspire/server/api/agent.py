"""``spire.api.server.agent.v1.Agent``: attesting, renewing and administering agents.

Agents call AttestAgent (anyone may: this is how an agent gets its first SVID), RenewAgent and
PostStatus (attested agents only). Operators call the rest over the admin socket. Every write
to an attested node is also applied to the registry cache at once, so the TCP gate sees a ban,
an eviction or a renewal on the very next call.

AttestAgent never leaves half an attestation behind: the request is checked and the CSR parsed
before the node attestor runs (a malformed request does not burn a one-time join token), and the
node is written only after its SVID was signed.

AttestAgent is read and answered by the generated codecs (:mod:`pyspire.proto.attestation`): a
fleet restarting attests a thousand agents at once, and a generic decoder and encoder cost more
per call than the rest of the handler's own work. Its route
(:meth:`AgentService.attest_agent_encoded`) takes codec requests and yields encoded responses.
"""

from __future__ import annotations

__all__ = ["AgentService", "apply_agent_mask"]

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta

import betterproto
import grpclib.const
import structlog
from betterproto.lib.google.protobuf import Empty
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pyspire.proto.attestation import attest_agent_challenge, attest_agent_result
from pyspire.proto.convert import (
    agent_to_proto,
    selectors_from_proto,
    spiffe_id_from_proto,
    to_timestamp,
    x509_svid_to_proto,
)
from pyspire.proto.gen.codec import spire_api_server_agent_v1 as agent_wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb
from pyspire.proto.messages import EncodedMessage, stream_route
from pyspire.registry.validation import RESERVED_PATH, is_reserved_path, validate_text
from pyspire.server.api.admission import AttestationAdmission
from pyspire.server.api.gate import serial_hex
from pyspire.server.api.ratelimit import ATTESTATION_PER_IP, PerIpRateLimiter
from pyspire.server.authorization import Caller, CallerKind
from pyspire.server.context import ServerContext
from pyspire.tasks import GeneratorTasks
from pyspire.telemetry.metrics import NODE_ATTESTATION
from pyspire.transport.calls import counted, current_caller, current_stream
from pyspire_sdk.errors import (
    InvalidArgumentError,
    InvalidSpiffeIdError,
    NotFoundError,
    PermissionDeniedError,
    PyspireError,
    UnavailableError,
)
from pyspire_sdk.limits import MAX_AGENT_VERSION_BYTES
from pyspire_sdk.model import (
    AttestationResult,
    AttestedNode,
    JoinToken,
    RegistrationEntry,
    X509Svid,
)
from pyspire_sdk.plugins.datastore import MatchBehavior, NodeFilter, Page, SelectorMatch
from pyspire_sdk.plugins.node_attestor import (
    AttestationPeer,
    ServerNodeAttestor,
    attestation_selectors,
    attesting_peer,
    check_agent_id,
    is_agent_id,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId

JOIN_TOKEN_ATTESTOR = "join_token"  # noqa: S105 (a plugin name, not a secret)

_ATTEST_AGENT_METHOD = "/spire.api.server.agent.v1.Agent/AttestAgent"

_ATTESTED_FIELDS = frozenset(
    {
        "attestation_type",
        "x509_svid_serial_number",
        "x509_svid_expires_at",
        "new_x509_svid_serial_number",
        "new_x509_svid_expires_at",
        "selectors",
        "can_reattest",
    }
)
_RENEWED_FIELDS = frozenset({"new_x509_svid_serial_number", "new_x509_svid_expires_at"})
_BANNED_FIELDS = frozenset(
    {
        "banned",
        "x509_svid_serial_number",
        "new_x509_svid_serial_number",
    }
)

_log = structlog.get_logger("pyspire.server.api.agent")


def apply_agent_mask(agent: pb.Agent, mask: pb.AgentMask | None) -> pb.Agent:
    """Clear the fields ``mask`` leaves out (the ID is always kept); ``None`` keeps all."""
    if mask is None:
        return agent
    if not mask.attestation_type:
        agent.attestation_type = ""
    if not mask.x509_svid_serial_number:
        agent.x509_svid_serial_number = ""
    if not mask.x509_svid_expires_at:
        agent.x509_svid_expires_at = 0
    if not mask.selectors:
        agent.selectors = []
    if not mask.banned:
        agent.banned = False
    if not mask.can_reattest:
        agent.can_reattest = False
    if not mask.agent_version:
        agent.agent_version = ""
    return agent


def _mask(mask: pb.AgentMask) -> pb.AgentMask | None:
    """The mask when the request carried one, else ``None`` (all fields)."""
    return mask if betterproto.serialized_on_wire(mask) else None


def _caller() -> Caller | None:
    try:
        caller = current_caller()
    except LookupError:
        return None
    return caller if isinstance(caller, Caller) else None


def _time_left() -> float | None:
    """Seconds left of the current call's deadline; ``None`` without a deadline or a call."""
    try:
        deadline = current_stream().deadline
    except LookupError:
        return None
    return None if deadline is None else deadline.time_remaining()


async def _next(
    requests: AsyncIterator[agent_wire.AttestAgentRequest],
) -> agent_wire.AttestAgentRequest | None:
    try:
        return await anext(requests)
    except StopAsyncIteration:
        return None


def _attestation_params(first: agent_wire.AttestAgentRequest | None) -> tuple[str, bytes, bytes]:
    """The attestation data type, its payload and the CSR of an AttestAgent stream's first
    request, checked before anything runs."""
    if first is None or first.params is None:
        raise InvalidArgumentError("missing params: the first request must carry params")
    params = first.params
    data = params.data
    if data is None or not data.type:
        raise InvalidArgumentError("missing params.data.type: the attestation data type")
    if not data.payload:
        raise InvalidArgumentError("missing params.data.payload: the attestation data")
    csr = params.params.csr if params.params is not None else b""
    return data.type, data.payload, csr


async def _challenge_response(requests: AsyncIterator[agent_wire.AttestAgentRequest]) -> bytes:
    """The agent's answer to the challenge it was just sent."""
    answer = await _next(requests)
    if answer is None:
        raise UnavailableError("agent closed the stream before answering a challenge")
    if answer.challenge_response is None:
        raise InvalidArgumentError("invalid request: expected challenge_response after a challenge")
    return answer.challenge_response


class _ChallengeRelay:
    """A node attestor's run for one AttestAgent stream, and the challenges it sends the agent.

    The attestor runs in a task of the stream's :class:`~pyspire.tasks.GeneratorTasks`: it goes
    on while the stream is suspended at a yield (a challenge on its way to the agent, the
    agent's answer on its way back), and ends with the stream however the stream ends.
    """

    def __init__(self, tasks: GeneratorTasks, attestor: ServerNodeAttestor, payload: bytes) -> None:
        self._outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._answers: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._attestation = tasks.start(self._attest(attestor, payload), name="node-attestation")

    async def _attest(self, attestor: ServerNodeAttestor, payload: bytes) -> AttestationResult:
        try:
            return await attestor.attest(payload, self._challenger)
        finally:
            self._outgoing.put_nowait(None)  # no more challenges: the result is there

    async def _challenger(self, challenge: bytes) -> bytes:
        await self._outgoing.put(challenge)
        return await self._answers.get()

    async def challenge(self) -> bytes | None:
        """The attestor's next challenge for the agent; None once the attestor has finished."""
        return await self._outgoing.get()

    async def answer(self, response: bytes) -> None:
        """Hand the agent's answer to the attestor."""
        await self._answers.put(response)

    async def result(self) -> AttestationResult:
        """What the attestor found (once :meth:`challenge` said it has finished); raises what
        the attestor raised."""
        return await self._attestation


@contextlib.contextmanager
def _logged_refusal(plugin_name: str, address: str) -> Iterator[None]:
    """Log why an attestation was refused (the node attestor's or the admission's reason), so
    the operator sees on the server what the agent is told."""
    try:
        yield
    except (PermissionDeniedError, InvalidArgumentError) as error:
        _log.warning(
            "agent attestation refused",
            attestation_type=plugin_name,
            address=address,
            reason=str(error),
        )
        raise


class AgentService(agent_pb.AgentBase):
    """The Agent service over one :class:`~pyspire.server.context.ServerContext`.

    With ``attestation_rate_limit`` (SPIRE's ``ratelimit.attestation``, on by default)
    AttestAgent admits one attestation per second per client address, timed by the context's
    clock. ``admission`` bounds how many attestations run at once and how many wait (see
    :mod:`pyspire.server.api.admission`); a caller beyond both is told UNAVAILABLE before
    anything is consumed.
    """

    def __init__(
        self,
        context: ServerContext,
        *,
        attestation_rate_limit: bool = True,
        admission: AttestationAdmission | None = None,
    ) -> None:
        self._context = context
        self._attestation_limiter = (
            PerIpRateLimiter(context.clock, ATTESTATION_PER_IP) if attestation_rate_limit else None
        )
        self._admission = (
            admission if admission is not None else AttestationAdmission(clock=context.clock)
        )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """The generated handlers, with AttestAgent carried as codec messages
        (:meth:`attest_agent_encoded`)."""
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        mapping[_ATTEST_AGENT_METHOD] = stream_route(
            self.attest_agent_encoded, agent_wire.AttestAgentRequest
        )
        return mapping

    # -- helpers ---------------------------------------------------------------------------

    def _agent_id(self, message: pb.Spiffeid | None, field: str = "id") -> SpiffeId:
        spiffe_id = spiffe_id_from_proto(message, field)
        if not is_agent_id(spiffe_id, self._context.trust_domain):
            raise InvalidArgumentError(
                f"invalid {field}: {str(spiffe_id)!r} is not an agent ID of trust domain "
                f"{self._context.trust_domain.name!r}"
            )
        return spiffe_id

    def _calling_agent(self) -> Caller:
        caller = _caller()
        if caller is None or not caller.is_(CallerKind.AGENT) or caller.spiffe_id is None:
            raise PermissionDeniedError("caller is not an attested agent")
        return caller

    async def _node_of(self, caller: Caller) -> AttestedNode:
        node = caller.node
        if node is None and caller.spiffe_id is not None:
            node = await self._context.registry.attested_node(caller.spiffe_id)
        if node is None:
            raise NotFoundError("agent not found")
        return node

    # -- admin -----------------------------------------------------------------------------

    async def count_agents(
        self, count_agents_request: agent_pb.CountAgentsRequest
    ) -> agent_pb.CountAgentsResponse:
        """How many agents are attested (banned ones included)."""
        count = await self._context.datastore.count_attested_nodes()
        return agent_pb.CountAgentsResponse(count=count)

    async def list_agents(
        self, list_agents_request: agent_pb.ListAgentsRequest
    ) -> agent_pb.ListAgentsResponse:
        """One page of agents matching the filter; fields reduced to ``output_mask``."""
        request = list_agents_request
        node_filter = self._node_filter(request.filter)
        if request.page_size < 0:
            raise InvalidArgumentError(f"invalid page_size: {request.page_size} is negative")
        page = await self._context.datastore.list_attested_nodes(
            node_filter, Page(size=request.page_size, token=request.page_token)
        )
        mask = _mask(request.output_mask)
        return agent_pb.ListAgentsResponse(
            agents=[apply_agent_mask(agent_to_proto(node), mask) for node in page.nodes],
            next_page_token=page.next_page_token,
        )

    @staticmethod
    def _node_filter(message: agent_pb.ListAgentsRequestFilter) -> NodeFilter:
        by_selectors: SelectorMatch | None = None
        match_message = message.by_selector_match
        if betterproto.serialized_on_wire(match_message):
            selectors = selectors_from_proto(
                match_message.selectors, "filter.by_selector_match.selectors"
            )
            try:
                behavior = MatchBehavior(int(match_message.match))
            except ValueError:
                raise InvalidArgumentError(
                    f"invalid filter.by_selector_match.match: unknown value {match_message.match}"
                ) from None
            try:
                by_selectors = SelectorMatch(selectors, behavior)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"invalid filter.by_selector_match: {error}") from None
        return NodeFilter(
            by_attestation_type=message.by_attestation_type or None,
            by_banned=message.by_banned,
            by_can_reattest=message.by_can_reattest,
            by_selectors=by_selectors,
        )

    async def get_agent(self, get_agent_request: agent_pb.GetAgentRequest) -> pb.Agent:
        """The agent named by ``id``; NotFound when it is not attested."""
        agent_id = self._agent_id(get_agent_request.id)
        node = await self._context.datastore.get_attested_node(agent_id)
        if node is None:
            raise NotFoundError(f"agent {str(agent_id)!r} not found")
        return apply_agent_mask(agent_to_proto(node), _mask(get_agent_request.output_mask))

    async def delete_agent(self, delete_agent_request: agent_pb.DeleteAgentRequest) -> Empty:
        """Evict an agent: its node is deleted and its SVID refused from now on. An agent whose
        attestor allows it may attest again."""
        agent_id = self._agent_id(delete_agent_request.id)
        try:
            await self._context.datastore.delete_attested_node(agent_id)
        except NotFoundError:
            raise NotFoundError(f"agent {str(agent_id)!r} not found") from None
        registry = self._context.registry
        registry.forget_node(agent_id)
        registry.poke()
        _log.info("agent evicted", agent_id=str(agent_id))
        return Empty()

    async def ban_agent(self, ban_agent_request: agent_pb.BanAgentRequest) -> Empty:
        """Ban an agent: its SVIDs are refused and it may not attest again until deleted."""
        agent_id = self._agent_id(ban_agent_request.id)
        banned = AttestedNode(spiffe_id=agent_id, attestation_type="", banned=True)
        try:
            stored = await self._context.datastore.update_attested_node(banned, _BANNED_FIELDS)
        except NotFoundError:
            raise NotFoundError(f"agent {str(agent_id)!r} not found") from None
        registry = self._context.registry
        registry.remember_node(stored)
        registry.poke()
        _log.info("agent banned", agent_id=str(agent_id))
        return Empty()

    async def create_join_token(
        self, create_join_token_request: agent_pb.CreateJoinTokenRequest
    ) -> pb.JoinToken:
        """A one-time join token valid for ``ttl`` seconds; with ``agent_id``, also the entry
        that gives the attested agent that ID as an alias."""
        request = create_join_token_request
        context = self._context
        if request.ttl < 1:
            raise InvalidArgumentError("invalid ttl: a ttl greater than 0 is required")
        alias_id: SpiffeId | None = None
        if betterproto.serialized_on_wire(request.agent_id):
            alias_id = spiffe_id_from_proto(request.agent_id, "agent_id")
            if alias_id.trust_domain != context.trust_domain:
                raise InvalidArgumentError(
                    f"invalid agent_id: {str(alias_id)!r} is not in trust domain "
                    f"{context.trust_domain.name!r}"
                )
            if alias_id.is_trust_domain_id():
                raise InvalidArgumentError(f"invalid agent_id: {str(alias_id)!r} has no path")
            if is_reserved_path(alias_id.path):
                raise InvalidArgumentError(
                    f"invalid agent_id: {str(alias_id)!r} is in the namespace reserved for the "
                    f"server and agents ({RESERVED_PATH})"
                )
        value = request.token or str(uuid.uuid4())
        try:
            token_agent_id = SpiffeId.from_segments(
                context.trust_domain, "spire", "agent", JOIN_TOKEN_ATTESTOR, value
            )
        except InvalidSpiffeIdError:
            raise InvalidArgumentError(
                "invalid token: only letters, digits, '.', '-' and '_' are allowed"
            ) from None
        expires_at = (context.clock.now() + timedelta(seconds=request.ttl)).replace(microsecond=0)
        await context.datastore.create_join_token(JoinToken(token=value, expires_at=expires_at))
        if alias_id is not None:
            entry = RegistrationEntry(
                spiffe_id=alias_id,
                parent_id=token_agent_id,
                selectors=(Selector("spiffe_id", str(token_agent_id)),),
            )
            try:
                await context.datastore.create_entry(entry)
            except Exception:
                await context.datastore.delete_join_token(value)
                raise
            context.registry.poke()
        return pb.JoinToken(value=value, expires_at=to_timestamp(expires_at))

    # -- agents ----------------------------------------------------------------------------

    async def attest_agent_encoded(
        self, requests: AsyncIterator[agent_wire.AttestAgentRequest]
    ) -> AsyncIterator[EncodedMessage[agent_wire.AttestAgentResponse]]:
        """AttestAgent: run the named node attestor (relaying its challenges), then issue the
        agent SVID."""
        caller = _caller()
        address = caller.address if caller is not None else ""
        # A server too busy to take the call refuses it before the address's rate allowance
        # is spent, so the agent's retry is not refused by the rate limit in turn.
        self._admission.check()
        if self._attestation_limiter is not None:
            self._attestation_limiter.check(address, what="agent attestation")
        async with (
            self._admission.admitted(),
            contextlib.aclosing(self._attest(requests, address)) as responses,
        ):
            async for response in responses:
                yield response

    async def _attest(
        self, requests: AsyncIterator[agent_wire.AttestAgentRequest], address: str
    ) -> AsyncGenerator[EncodedMessage[agent_wire.AttestAgentResponse], None]:
        """One admitted attestation: the challenges to relay, then the result."""
        self._admission.check_time_left(_time_left())
        plugin_name, payload, csr = _attestation_params(await _next(requests))
        attestor = self._node_attestor(plugin_name)
        # Counted only once the attestor is known: its name labels the metric, and names
        # callers make up must not.
        with (
            counted(self._context.metrics, NODE_ATTESTATION, attestor=plugin_name),
            _logged_refusal(plugin_name, address),
        ):
            public_key = await self._public_key(csr)
            async with GeneratorTasks() as tasks:
                # The attestor's task sees who is attesting (a task copies the context).
                with attesting_peer(AttestationPeer(address=address or None)):
                    relay = _ChallengeRelay(tasks, attestor, payload)
                while (challenge := await relay.challenge()) is not None:
                    yield EncodedMessage(
                        attest_agent_challenge(challenge), agent_wire.decode_AttestAgentResponse
                    )
                    await relay.answer(await _challenge_response(requests))
                result = await relay.result()
            node, svid = await self._admit(plugin_name, result, public_key)
            _log.info(
                "agent attested",
                agent_id=str(node.spiffe_id),
                attestation_type=plugin_name,
                address=address,
            )
            yield EncodedMessage(
                attest_agent_result(svid, reattestable=node.can_reattest),
                agent_wire.decode_AttestAgentResponse,
            )

    async def _public_key(self, csr: bytes) -> CertificatePublicKeyTypes:
        """The key of an agent's CSR, its self-signature checked off the event loop (a P-256
        verify costs three signatures, and a thousand agents may attest at once)."""
        if not csr:
            raise InvalidArgumentError("missing CSR")
        [checked] = await self._context.issuer.check_csrs([csr])
        if isinstance(checked, PyspireError):
            raise checked
        return checked

    def _node_attestor(self, plugin_name: str) -> ServerNodeAttestor:
        attestor = self._context.node_attestors.get(plugin_name)
        if attestor is None:
            raise InvalidArgumentError(
                f"invalid params.data.type: no node attestor named {plugin_name!r} is configured"
            )
        return attestor

    async def _admit(
        self, plugin_name: str, result: AttestationResult, public_key: CertificatePublicKeyTypes
    ) -> tuple[AttestedNode, X509Svid]:
        context = self._context
        datastore = context.datastore
        agent_id = check_agent_id(result, context.trust_domain)
        selectors = attestation_selectors(plugin_name, result.selector_values)
        existing = await datastore.get_attested_node(agent_id)
        if existing is not None:
            if existing.banned:
                raise PermissionDeniedError("failed to attest: agent is banned")
            if not existing.can_reattest:
                raise PermissionDeniedError(
                    "attestation data has already been used to attest an agent"
                )
        svid = await context.issuer.agent_x509(agent_id, public_key)
        leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
        node = AttestedNode(
            spiffe_id=agent_id,
            attestation_type=plugin_name,
            x509_svid_serial_number=serial_hex(leaf),
            x509_svid_expires_at=svid.expires_at,
            selectors=selectors,
            can_reattest=result.can_reattest,
        )
        if existing is not None:
            await datastore.set_node_selectors(agent_id, selectors)
            stored = await datastore.update_attested_node(node, _ATTESTED_FIELDS)
        else:
            # A new node's selectors go in with it, one transaction: non-empty ones replace any
            # stored before. Empty ones leave stored ones in place, and the stored node says so:
            # those (left by an attestation that stopped half-way) are cleared before the agent
            # holds its SVID, in the rare case there are any.
            stored = await datastore.create_attested_node(node)
            if stored.selectors != selectors:
                await datastore.set_node_selectors(agent_id, selectors)
                stored = replace(stored, selectors=selectors)
        context.registry.remember_node(stored)
        context.registry.poke()
        return stored, svid

    async def renew_agent(
        self, renew_agent_request: agent_pb.RenewAgentRequest
    ) -> agent_pb.RenewAgentResponse:
        """A new SVID for the calling agent; it becomes current when the agent first uses it."""
        caller = self._calling_agent()
        node = await self._node_of(caller)
        if node.can_reattest:
            raise PermissionDeniedError("agent must reattest instead of renew")
        public_key = await self._public_key(renew_agent_request.params.csr)
        context = self._context
        svid = await context.issuer.agent_x509(node.spiffe_id, public_key)
        leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
        renewed = replace(
            node,
            new_x509_svid_serial_number=serial_hex(leaf),
            new_x509_svid_expires_at=svid.expires_at,
        )
        try:
            stored = await context.datastore.update_attested_node(renewed, _RENEWED_FIELDS)
        except NotFoundError:
            raise NotFoundError("agent not found") from None
        context.registry.remember_node(stored)
        _log.info("agent SVID renewed", agent_id=str(node.spiffe_id))
        return agent_pb.RenewAgentResponse(svid=x509_svid_to_proto(svid))

    async def post_status(
        self, post_status_request: agent_pb.PostStatusRequest
    ) -> agent_pb.PostStatusResponse:
        """Record the calling agent's version."""
        caller = self._calling_agent()
        version = validate_text(
            post_status_request.agent_version, "agent_version", max_bytes=MAX_AGENT_VERSION_BYTES
        )
        if version:
            node = await self._node_of(caller)
            try:
                stored = await self._context.datastore.update_attested_node(
                    replace(node, agent_version=version), frozenset({"agent_version"})
                )
            except NotFoundError:
                raise NotFoundError("agent not found") from None
            self._context.registry.remember_node(stored)
        return agent_pb.PostStatusResponse()
