"""Envoy's Secret Discovery Service (``envoy.service.secret.v3.SecretDiscoveryService``) on the
agent's Workload API socket, as SPIRE's agent serves it.

Envoy is a workload like any other: the caller is attested by its pid (no security header:
Envoy sends none), and gets the secrets of the entries its selectors match
(:mod:`~pyspire.agent.workload.sds_secrets` names them). A caller that cannot be attested gets
UNAVAILABLE, one that matches no entry PERMISSION_DENIED ``no identity issued``: neither gets
a secret.

- ``FetchSecrets`` answers once, from the current snapshot, without version or nonce.
- ``StreamSecrets`` answers each request whose names changed, and pushes the requested secrets
  again whenever what they are made of changes (an SVID rotated, a bundle changed), with the
  version and nonce rules of :class:`~pyspire.agent.workload.sds_streams.SotwStream`.
- ``DeltaSecrets`` serves incremental xDS
  (:class:`~pyspire.agent.workload.sds_streams.DeltaStream`).

While a stream is open the caller's X509-SVIDs are demanded from the cache, as for
FetchX509SVID: missing ones are minted at once, and the first answer waits for them (at most
``first_answer_wait`` seconds). Streams end when the client closes its side, with the error of
a request that cannot be answered (an unknown name: INVALID_ARGUMENT), with
PERMISSION_DENIED when the caller's last entry goes, and with UNAVAILABLE when the agent stops.

Many Envoys on one agent see the same secrets: a caller's secrets are built once per snapshot
revision for every caller that matches the same entries with the same validator choice, and
each list of requested names is encoded once; a response adds only its version and nonce.
"""

from __future__ import annotations

__all__ = ["SDS_CACHE_SIZE", "SDS_SERVICE", "SecretDiscoveryService"]

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Generic, Protocol, TypeVar

import grpclib.const
import structlog
from structlog.typing import FilteringBoundLogger

from pyspire.agent.identities import IdentitySource, Snapshot
from pyspire.agent.snapshot_streams import SnapshotFeed, SnapshotStreams, svids_settled
from pyspire.agent.workload.attestation import WorkloadAttestation
from pyspire.agent.workload.caller import attest_caller
from pyspire.agent.workload.revision_cache import RevisionCache
from pyspire.agent.workload.sds_secrets import (
    CallerSecrets,
    caller_content,
    uses_spiffe_validator,
)
from pyspire.agent.workload.sds_streams import DeltaStream, Received, SotwStream, XdsStream
from pyspire.agent.workload.service import FIRST_ANSWER_WAIT
from pyspire.config.sds import SdsConfig
from pyspire.proto.gen.codec import envoy_service_discovery_v3 as discovery
from pyspire.proto.gen.codec.envoy_config_core_v3 import Node
from pyspire.proto.messages import EncodedMessage, stream_route, unary_route
from pyspire.proto.secrets import (
    SECRET_TYPE_URL,
    delta_response,
    discovery_resources,
    discovery_response,
)
from pyspire.tasks import GeneratorTasks
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.selector import Selector

SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
"""The gRPC service name, as Envoy calls it."""

_PREFIX = f"/{SDS_SERVICE}/"

SDS_CACHE_SIZE = 256
"""Distinct callers (by the entries they match and their validator choice) whose secrets and
encoded resource lists are kept for the current snapshot revision."""

RESOURCE_LISTS_PER_CALLER = 16
"""Distinct lists of requested names whose encoded answer is kept per caller and revision."""


class _XdsRequest(Protocol):
    """What the service reads of a request of either variant before its state does."""

    @property
    def type_url(self) -> str: ...


R = TypeVar("R", bound=_XdsRequest)
M = TypeVar("M")

_Response = EncodedMessage[discovery.DiscoveryResponse]
_DeltaResponse = EncodedMessage[discovery.DeltaDiscoveryResponse]


def _check_type_url(type_url: str) -> None:
    if type_url and type_url != SECRET_TYPE_URL:
        raise InvalidArgumentError(f"type_url: expected {SECRET_TYPE_URL}, found {type_url!r}")


class _CallerAnswers:
    """One caller's secrets at one snapshot revision and the state-of-the-world resource lists
    encoded from them, shared by every stream (and every FetchSecrets call) that asks for the
    same names with the same validator choice at that revision.

    At most :data:`RESOURCE_LISTS_PER_CALLER` lists are kept: a client that keeps asking for
    new names costs encodings, not memory.
    """

    def __init__(self, secrets: CallerSecrets) -> None:
        self.secrets = secrets
        self._lists: dict[tuple[str, ...], bytes] = {}

    def resources(self, names: Sequence[str]) -> bytes:
        """The encoded resources of a state-of-the-world answer to ``names`` (see
        :meth:`~pyspire.agent.workload.sds_secrets.CallerSecrets.resolve`)."""
        key = tuple(names)
        found = self._lists.get(key)
        if found is None:
            found = discovery_resources([secret for _, secret in self.secrets.resolve(key)])
            if len(self._lists) >= RESOURCE_LISTS_PER_CALLER:
                self._lists.clear()
            self._lists[key] = found
        return found


class SecretDiscoveryService:
    """The Secret Discovery Service over an :class:`~pyspire.agent.identities.IdentitySource`.

    Serve it beside the Workload API (:class:`~pyspire.agent.workload.WorkloadEndpoint` takes
    it as ``sds``). ``names`` are the agent's ``sds`` settings; ``clock`` bounds the first
    answer's wait.
    """

    def __init__(
        self,
        source: IdentitySource,
        attestation: WorkloadAttestation,
        clock: Clock,
        names: SdsConfig | None = None,
        *,
        first_answer_wait: float = FIRST_ANSWER_WAIT,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        self._source = source
        self._attestation = attestation
        self._names = names if names is not None else SdsConfig()
        self._log: FilteringBoundLogger = (
            logger if logger is not None else structlog.get_logger("pyspire.agent.sds")
        )
        self._streams = SnapshotStreams(
            source,
            clock,
            first_answer_wait=first_answer_wait,
            shutting_down="workload api is shutting down",
        )
        self._answers: RevisionCache[tuple[tuple[str, ...], bool], _CallerAnswers] = RevisionCache(
            SDS_CACHE_SIZE
        )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """The gRPC routes of the service, carried as codec messages."""
        return {
            _PREFIX + "StreamSecrets": stream_route(
                self.stream_secrets, discovery.DiscoveryRequest
            ),
            _PREFIX + "DeltaSecrets": stream_route(
                self.delta_secrets, discovery.DeltaDiscoveryRequest
            ),
            _PREFIX + "FetchSecrets": unary_route(self.fetch_secrets, discovery.DiscoveryRequest),
        }

    def stop(self) -> None:
        """End every open stream with UNAVAILABLE; later calls are refused by the endpoint."""
        self._streams.stop()

    def _caller(
        self, snapshot: Snapshot, selectors: frozenset[Selector], node: Node | None
    ) -> _CallerAnswers:
        """The caller's secrets in ``snapshot`` for this Envoy's validator choice: built once
        per revision for every caller that matches the same entries."""
        spiffe = uses_spiffe_validator(self._names, node)
        key = (tuple(entry.id for entry in snapshot.view(selectors).entries), spiffe)
        found = self._answers.get(snapshot.revision, key)
        if found is None:
            secrets = CallerSecrets(snapshot, selectors, self._names, spiffe_validator=spiffe)
            found = _CallerAnswers(secrets)
            self._answers.put(snapshot.revision, key, found)
        return found

    # -- FetchSecrets -----------------------------------------------------------------------

    async def fetch_secrets(self, request: discovery.DiscoveryRequest) -> _Response:
        _check_type_url(request.type_url)
        selectors = await attest_caller(self._attestation, self._log)
        caller = self._caller(self._source.snapshot(), selectors, request.node)
        names = list(dict.fromkeys(name for name in request.resource_names if name))
        return discovery_response("", caller.resources(names), "")

    # -- StreamSecrets ----------------------------------------------------------------------

    def stream_secrets(
        self, requests: AsyncIterator[discovery.DiscoveryRequest]
    ) -> AsyncIterator[_Response]:
        state = SotwStream()

        def answer(caller: _CallerAnswers) -> _Response:
            resources = caller.resources(state.names)
            version, nonce = state.sent()
            return discovery_response(version, resources, nonce)

        return self._serve(requests, state, answer)

    # -- DeltaSecrets -----------------------------------------------------------------------

    def delta_secrets(
        self, requests: AsyncIterator[discovery.DeltaDiscoveryRequest]
    ) -> AsyncIterator[_DeltaResponse]:
        state = DeltaStream()

        def answer(caller: _CallerAnswers) -> _DeltaResponse | None:
            changes = state.changes(caller.secrets.everything(), caller.secrets.get)
            if not changes:
                return None
            version, nonce = state.sent()
            return delta_response(version, changes.resources, changes.removed, nonce)

        return self._serve(requests, state, answer)

    # -- shared -----------------------------------------------------------------------------

    async def _serve(
        self,
        requests: AsyncIterator[R],
        state: XdsStream[R],
        answer: Callable[[_CallerAnswers], M | None],
    ) -> AsyncIterator[M]:
        """One xDS stream of either variant: attest the caller, demand its SVIDs while the
        stream is open, and take the client's requests and the agent's snapshots in turn.
        ``state`` judges each (a request of another type URL is INVALID_ARGUMENT); whenever it
        calls for an answer and the caller's secrets are known, ``answer`` makes the response
        (None: nothing to send)."""
        selectors = await attest_caller(self._attestation, self._log)
        snapshot: Snapshot | None = None
        with self._source.demand(selectors):
            async with self._open_inputs(requests, selectors) as inputs:
                while (event := await inputs.next()) is not None:
                    if isinstance(event, Snapshot):
                        snapshot = event
                        if not state.update(caller_content(snapshot, selectors)):
                            continue
                    else:
                        _check_type_url(event.type_url)
                        if not self._received(state.receive(event)):
                            continue
                    if snapshot is None:
                        continue  # the first answer waits for the caller's SVIDs
                    response = answer(self._caller(snapshot, selectors, state.node))
                    if response is not None:
                        yield response

    def _received(self, received: Received) -> bool:
        """Log what a request says beyond its names; whether it calls for an answer."""
        if received.stale:
            self._log.debug("sds request with a stale nonce ignored", resource_names=received.names)
        if received.rejected is not None:
            self._log.warning(
                "envoy rejected the secrets sent",
                resource_names=received.names,
                error=received.rejected,
            )
        return received.respond

    @contextlib.asynccontextmanager
    async def _open_inputs(
        self, requests: AsyncIterator[R], selectors: frozenset[Selector]
    ) -> AsyncIterator[_Inputs[R]]:
        """The stream's requests and the source's snapshots as one sequence of events, while
        the block runs (the stream's yields are inside it); :meth:`stop` ends it."""
        async with self._streams.feed(ready=svids_settled(selectors)) as feed:
            inputs: _Inputs[R] = _Inputs(feed)
            async with GeneratorTasks() as tasks:
                tasks.start(inputs.follow_requests(requests), name="sds-requests")
                yield inputs


class _Inputs(Generic[R]):
    """A stream's requests merged with its :class:`~pyspire.agent.snapshot_streams.SnapshotFeed`,
    taken one at a time.

    A task the stream owns (see :class:`~pyspire.tasks.GeneratorTasks`) queues the client's
    requests and wakes the feed. Requests come first, in order, so an answer reflects what the
    client asked last; the feed holds the first snapshot back until the caller's SVIDs are
    there (or the first answer may wait no longer) and ends the stream when the agent stops.
    """

    def __init__(self, feed: SnapshotFeed) -> None:
        self._feed = feed
        self._requests: deque[R] = deque()
        self._requests_ended = False
        self._failure: Exception | None = None

    async def follow_requests(self, requests: AsyncIterator[R]) -> None:
        """Queue the client's requests until it closes its side or this is cancelled."""
        try:
            async for request in requests:
                self._requests.append(request)
                self._feed.wake()
        except Exception as error:  # a malformed request: the stream raises it next
            self._failure = error
        finally:
            self._requests_ended = True
            self._feed.wake()

    async def next(self) -> R | Snapshot | None:
        """The next request, else the feed's next snapshot, once there is one; None when the
        client has closed its side."""
        while True:
            self._feed.look()
            if self._failure is not None:
                raise self._failure
            if self._requests:
                return self._requests.popleft()
            if self._requests_ended:
                return None
            found = self._feed.take()
            if found is not None:
                return found
            await self._feed.wait()
