"""SPIRE's Delegated Identity API (``spire.api.agent.delegatedidentity.v1.DelegatedIdentity``),
on the agent's admin socket.

A trusted local process (a delegate: a proxy, a CNI, an SDS server) obtains the SVIDs of other
workloads of the node, to act on their behalf. The caller is attested by its pid like a Workload
API caller and must hold an identity listed in ``authorized_delegates``
(:class:`~pyspire.agent.admin.delegates.DelegateAuthorizer`), checked when the call starts and
again on every update of a stream. The workload is named by exactly one of:

- ``selectors``, taken as attested: the delegate vouches for them;
- ``pid``, which the agent attests itself with its workload attestors. The delegate must make
  sure the pid is not recycled while it uses the answer (SPIRE's rule).

What is sent, as SPIRE sends it: the X509-SVIDs (with their PKCS#8 keys) of the entries whose
selectors are all among the workload's, admin and downstream entries left out, and the trust
domains (``spiffe://<name>``) of the federated bundles they federate with; all bundles the agent
holds, ours and every federated one, keyed by trust domain ID, as concatenated DER certificates
(X.509) or JWK Sets (JWT); JWT-SVIDs for the workload's entries and the requested audiences.
Streams send the whole view at once and again whenever it changes (an SVID rotated, an entry or
a bundle changed); an X509-SVID stream whose workload matches no entry sends an empty list, so a
delegate can subscribe before the entry exists.

Status codes: UNAVAILABLE when the caller or the pid cannot be attested, the agent does not know
its entries yet, a JWT-SVID cannot be minted, or the agent is stopping; PERMISSION_DENIED when
the caller is not an authorized delegate (the message says why), and for FetchJWTSVIDs when the
workload matches no entry ("no identity issued"); INVALID_ARGUMENT when both or neither of
selectors and a non-zero pid are given, a selector or the pid is malformed, or no audience is.
"""

from __future__ import annotations

__all__ = ["SERVICE_NAME", "DelegatedIdentityService"]

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace

import grpclib.const
import structlog
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from structlog.typing import FilteringBoundLogger

from pyspire.agent.admin.delegates import DelegateAuthorizer
from pyspire.agent.identities import Identity, IdentitySource, Snapshot
from pyspire.agent.snapshot_streams import SnapshotStreams, entries_known, svids_settled
from pyspire.agent.workload.attestation import WorkloadAttestation, WorkloadAttestationError
from pyspire.agent.workload.caller import attest_caller
from pyspire.agent.workload.service import FIRST_ANSWER_WAIT
from pyspire.proto.convert import selectors_from_proto
from pyspire.proto.gen.codec import spire_api_agent_delegatedidentity_v1 as wire
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.messages import EncodedMessage, server_stream_route, unary_route
from pyspire.proto.svids import encode_jwt_svid, encode_x509_svid
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

SERVICE_NAME = "spire.api.agent.delegatedidentity.v1.DelegatedIdentity"
"""The gRPC service name, as SPIRE's agent serves it."""

_PREFIX = f"/{SERVICE_NAME}/"
_ONE_OF = "must provide either selectors or non-zero PID, but not both"


class DelegatedIdentityService:
    """The Delegated Identity API over the agent's cache.

    Serve it through :class:`~pyspire.transport.calls.WithCallContext` on a unix socket (the
    handlers attest the caller from its peer credentials). ``attestation`` is the agent's
    workload attestor chain; ``first_answer_wait`` bounds (on ``clock``) how long a new X509-SVID
    stream waits for the workload's SVIDs to be minted before it answers with what there is.
    Requests are read and responses written by the generated codecs, as the Workload API's are.
    """

    def __init__(
        self,
        source: IdentitySource,
        attestation: WorkloadAttestation,
        clock: Clock,
        *,
        authorized_delegates: Iterable[SpiffeId],
        first_answer_wait: float = FIRST_ANSWER_WAIT,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        self._source = source
        self._attestation = attestation
        self._authorizer = DelegateAuthorizer(authorized_delegates)
        self._streams = SnapshotStreams(
            source,
            clock,
            first_answer_wait=first_answer_wait,
            shutting_down="delegated identity api is shutting down",
        )
        self._log: FilteringBoundLogger = (
            logger if logger is not None else structlog.get_logger("pyspire.agent.delegated")
        )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """The gRPC routes of the service, carried as codec messages."""
        return {
            _PREFIX + "SubscribeToX509SVIDs": server_stream_route(
                self.subscribe_to_x509_svids, wire.SubscribeToX509SVIDsRequest
            ),
            _PREFIX + "SubscribeToX509Bundles": server_stream_route(
                self.subscribe_to_x509_bundles, wire.SubscribeToX509BundlesRequest
            ),
            _PREFIX + "FetchJWTSVIDs": unary_route(self.fetch_jwt_svids, wire.FetchJWTSVIDsRequest),
            _PREFIX + "SubscribeToJWTBundles": server_stream_route(
                self.subscribe_to_jwt_bundles, wire.SubscribeToJWTBundlesRequest
            ),
        }

    def stop(self) -> None:
        """End every open stream with UNAVAILABLE; calls made afterwards are refused too."""
        self._streams.stop()

    # -- X.509 ------------------------------------------------------------------------------

    async def subscribe_to_x509_svids(
        self, request: wire.SubscribeToX509SVIDsRequest
    ) -> AsyncIterator[EncodedMessage[wire.SubscribeToX509SVIDsResponse]]:
        delegate = await self._authorized_caller()
        selectors = await self._workload_selectors(request.selectors, request.pid)
        last: bytes | None = None
        with self._source.demand(selectors):
            async for snapshot in self._streams.snapshots(svids_settled(selectors)):
                self._recheck(snapshot, delegate)
                encoded = self._x509_svids_response(snapshot, selectors)
                if encoded == last:
                    continue
                last = encoded
                yield EncodedMessage(encoded, wire.decode_SubscribeToX509SVIDsResponse)

    def _x509_svids_response(self, snapshot: Snapshot, selectors: frozenset[Selector]) -> bytes:
        identities = [
            identity
            for identity in snapshot.view(selectors).identities
            if _delegable(identity.entry)
        ]
        svids = []
        for identity in identities:
            svid = identity.svid
            if svid.private_key is None:
                self._log.error("cached x509 svid has no private key", entry_id=identity.entry.id)
                continue
            svids.append(
                wire.write_X509SVIDWithKey(
                    x509_svid=encode_x509_svid(replace(svid, hint=identity.entry.hint)),
                    x509_svid_key=svid.private_key,
                )
            )
        return wire.write_SubscribeToX509SVIDsResponse(
            x509_svids=svids, federates_with=_federates_with(snapshot, identities)
        )

    async def subscribe_to_x509_bundles(
        self, request: wire.SubscribeToX509BundlesRequest
    ) -> AsyncIterator[EncodedMessage[wire.SubscribeToX509BundlesResponse]]:
        delegate = await self._authorized_caller()
        last: dict[str, bytes] | None = None
        async for snapshot in self._streams.snapshots(entries_known):
            self._recheck(snapshot, delegate)
            encoded = {
                _td_key(td): bundle.x509_authorities_der()
                for td, bundle in _all_bundles(snapshot).items()
            }
            if encoded == last:
                continue
            last = encoded
            yield EncodedMessage(
                wire.write_SubscribeToX509BundlesResponse(ca_certificates=encoded),
                wire.decode_SubscribeToX509BundlesResponse,
            )

    # -- JWT --------------------------------------------------------------------------------

    async def fetch_jwt_svids(
        self, request: wire.FetchJWTSVIDsRequest
    ) -> EncodedMessage[wire.FetchJWTSVIDsResponse]:
        audience = list(request.audience)
        if not audience or not all(audience):
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        await self._authorized_caller()
        selectors = await self._workload_selectors(request.selectors, request.pid)
        snapshot = self._source.snapshot()
        entries = [e for e in snapshot.view(selectors).entries if _delegable(e)]
        if not entries:
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        svids = [await self._jwt_svid(entry, audience) for entry in entries]
        return EncodedMessage(
            wire.write_FetchJWTSVIDsResponse(svids=svids), wire.decode_FetchJWTSVIDsResponse
        )

    async def _jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> bytes:
        try:
            jwt_svid = await self._source.fetch_jwt_svid(entry, audience)
        except Exception as error:  # any failure to mint is "try again later"
            self._log.warning(
                "could not fetch jwt svid for a delegate",
                entry_id=entry.id,
                spiffe_id=str(entry.spiffe_id),
                error=str(error) or type(error).__name__,
            )
            raise GRPCError(Status.UNAVAILABLE, f"could not fetch JWT-SVID: {error}") from None
        return encode_jwt_svid(replace(jwt_svid, hint=entry.hint))

    async def subscribe_to_jwt_bundles(
        self, request: wire.SubscribeToJWTBundlesRequest
    ) -> AsyncIterator[EncodedMessage[wire.SubscribeToJWTBundlesResponse]]:
        delegate = await self._authorized_caller()
        last: dict[str, bytes] | None = None
        async for snapshot in self._streams.snapshots(entries_known):
            self._recheck(snapshot, delegate)
            encoded = {
                _td_key(td): bundle.jwt_bundle_jwks()
                for td, bundle in _all_bundles(snapshot).items()
            }
            if encoded == last:
                continue
            last = encoded
            yield EncodedMessage(
                wire.write_SubscribeToJWTBundlesResponse(bundles=encoded),
                wire.decode_SubscribeToJWTBundlesResponse,
            )

    # -- the caller and the workload --------------------------------------------------------

    async def _authorized_caller(self) -> frozenset[Selector]:
        """The selectors of the caller, once it is found to be an authorized delegate."""
        self._streams.refuse_if_stopping()
        selectors = await attest_caller(self._attestation, self._log)
        delegate = self._recheck(self._source.snapshot(), selectors)
        self._log.debug("caller authorized as delegate", delegate_id=str(delegate))
        return selectors

    def _recheck(self, snapshot: Snapshot, selectors: frozenset[Selector]) -> SpiffeId:
        """The caller's listed identity in ``snapshot``; the refusal is logged and raised."""
        try:
            return self._authorizer.check(snapshot, selectors)
        except GRPCError as error:
            self._log.warning("delegated identity api call refused", reason=error.message)
            raise

    async def _workload_selectors(
        self, selectors: Sequence[types_wire.Selector], pid: int
    ) -> frozenset[Selector]:
        """The selectors of the workload a request names: its own ``selectors``, or those the
        agent's attestors find for ``pid``."""
        if bool(selectors) == (pid != 0):
            raise GRPCError(Status.INVALID_ARGUMENT, _ONE_OF)
        if selectors:
            try:
                return frozenset(selectors_from_proto(selectors, "selectors"))
            except InvalidArgumentError as error:
                raise GRPCError(
                    Status.INVALID_ARGUMENT, f"could not parse provided selectors: {error}"
                ) from None
        if pid < 0:
            raise GRPCError(Status.INVALID_ARGUMENT, f"pid must be positive, got {pid}")
        try:
            return await self._attestation.attest(pid)
        except WorkloadAttestationError as error:
            self._log.warning("delegated workload attestation failed", pid=pid, reason=str(error))
            raise GRPCError(
                Status.UNAVAILABLE, f"workload attestation failed for pid {pid}: {error}"
            ) from None


def _delegable(entry: RegistrationEntry) -> bool:
    """Whether a delegate may have this entry's SVIDs: admin and downstream entries are not
    handed on (SPIRE's rule)."""
    return not (entry.admin or entry.downstream)


def _td_key(trust_domain: TrustDomain) -> str:
    return str(trust_domain.id)


def _all_bundles(snapshot: Snapshot) -> dict[TrustDomain, Bundle]:
    """Our bundle (when the agent has one) and every federated bundle it holds."""
    found = dict(snapshot.federated_bundles)
    if snapshot.bundle is not None:
        found[snapshot.bundle.trust_domain] = snapshot.bundle
    return found


def _federates_with(snapshot: Snapshot, identities: Sequence[Identity]) -> list[str]:
    """The trust domains (``spiffe://<name>``, sorted) whose bundles the agent holds and these
    identities' entries federate with."""
    names = {
        _td_key(trust_domain)
        for identity in identities
        for trust_domain in identity.entry.federates_with
        if trust_domain in snapshot.federated_bundles
    }
    return sorted(names)
