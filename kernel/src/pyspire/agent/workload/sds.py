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
"""

from __future__ import annotations

__all__ = ["SDS_SERVICE", "SecretDiscoveryService"]

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import grpclib.const
import structlog
from structlog.typing import FilteringBoundLogger

from pyspire.agent.identities import IdentitySource, Snapshot
from pyspire.agent.snapshot_streams import SnapshotFeed, SnapshotStreams, svids_settled
from pyspire.agent.workload.attestation import WorkloadAttestation
from pyspire.agent.workload.caller import attest_caller
from pyspire.agent.workload.sds_secrets import (
    CallerSecrets,
    caller_content,
    uses_spiffe_validator,
)
from pyspire.agent.workload.sds_streams import DeltaStream, Received, SotwStream
from pyspire.agent.workload.service import FIRST_ANSWER_WAIT
from pyspire.config.sds import SdsConfig
from pyspire.proto.gen.codec import envoy_service_discovery_v3 as discovery
from pyspire.proto.gen.codec.envoy_config_core_v3 import Node
from pyspire.proto.messages import EncodedMessage, stream_route, unary_route
from pyspire.proto.secrets import SECRET_TYPE_URL, delta_response, discovery_response
from pyspire.tasks import GeneratorTasks
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.selector import Selector

SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
"""The gRPC service name, as Envoy calls it."""

_PREFIX = f"/{SDS_SERVICE}/"

R = TypeVar("R")

_Response = EncodedMessage[discovery.DiscoveryResponse]
_DeltaResponse = EncodedMessage[discovery.DeltaDiscoveryResponse]


def _check_type_url(type_url: str) -> None:
    if type_url and type_url != SECRET_TYPE_URL:
        raise InvalidArgumentError(f"type_url: expected {SECRET_TYPE_URL}, found {type_url!r}")


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

    def _secrets(
        self, snapshot: Snapshot, selectors: frozenset[Selector], node: Node | None
    ) -> CallerSecrets:
        spiffe = uses_spiffe_validator(self._names, node)
        return CallerSecrets(snapshot, selectors, self._names, spiffe_validator=spiffe)

    # -- FetchSecrets -----------------------------------------------------------------------

    async def fetch_secrets(self, request: discovery.DiscoveryRequest) -> _Response:
        _check_type_url(request.type_url)
        selectors = await attest_caller(self._attestation, self._log)
        secrets = self._secrets(self._source.snapshot(), selectors, request.node)
        resolved = secrets.resolve(request.resource_names)
        return discovery_response("", [secret for _, secret in resolved], "")

    # -- StreamSecrets ----------------------------------------------------------------------

    async def stream_secrets(
        self, requests: AsyncIterator[discovery.DiscoveryRequest]
    ) -> AsyncIterator[_Response]:
        selectors = await attest_caller(self._attestation, self._log)
        state = SotwStream()
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
                        if not self._received(state.receive(event), event.resource_names):
                            continue
                    if snapshot is None:
                        continue  # the first answer waits for the caller's SVIDs
                    secrets = self._secrets(snapshot, selectors, state.node)
                    resolved = secrets.resolve(state.names)
                    version, nonce = state.sent()
                    yield discovery_response(version, [s for _, s in resolved], nonce)

    def _received(self, received: Received, names: list[str]) -> bool:
        """Log what a request says beyond its names; whether it calls for an answer."""
        if received.stale:
            self._log.debug("sds request with a stale nonce ignored", resource_names=names)
        if received.rejected is not None:
            self._log.warning(
                "envoy rejected the secrets sent", resource_names=names, error=received.rejected
            )
        return received.respond

    # -- DeltaSecrets -----------------------------------------------------------------------

    async def delta_secrets(
        self, requests: AsyncIterator[discovery.DeltaDiscoveryRequest]
    ) -> AsyncIterator[_DeltaResponse]:
        selectors = await attest_caller(self._attestation, self._log)
        state = DeltaStream()
        snapshot: Snapshot | None = None
        content: object = None
        with self._source.demand(selectors):
            async with self._open_inputs(requests, selectors) as inputs:
                while (event := await inputs.next()) is not None:
                    if isinstance(event, Snapshot):
                        snapshot = event
                        now = caller_content(snapshot, selectors)
                        if now == content:
                            continue
                        content = now
                    else:
                        _check_type_url(event.type_url)
                        self._received(state.receive(event), event.resource_names_subscribe)
                    if snapshot is None:
                        continue
                    secrets = self._secrets(snapshot, selectors, state.node)
                    changes = state.changes(secrets.everything(), secrets.get)
                    if changes:
                        version, nonce = state.sent()
                        yield delta_response(version, changes.resources, changes.removed, nonce)

    # -- shared -----------------------------------------------------------------------------

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
