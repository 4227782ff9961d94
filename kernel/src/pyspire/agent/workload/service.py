"""The SPIFFE Workload API (``SpiffeWorkloadAPI``) served by the agent.

Every call must carry exactly one ``workload.spiffe.io: true`` metadata value (checked by
:meth:`WorkloadApiService.gate` before anything else). The caller is then identified out of
band: its pid comes from the unix socket's peer credentials, the workload attestor chain turns
the pid into selectors, and the caller's identities are the cached identities whose entry
selectors are all among them (:meth:`~pyspire.agent.identities.Snapshot.matching`).

Status codes, as the Workload API standard and SPIRE give them:

- INVALID_ARGUMENT: the security header is missing, or a mandatory request field is empty or
  malformed, or (ValidateJWTSVID) the token is not a valid JWT-SVID; clients do not retry;
- UNAVAILABLE: attestation failed, the agent has no bundle yet, does not know its entries yet
  (no sync so far and nothing kept from an earlier run), holds no valid X509-SVID for a caller
  that is entitled to one (not minted yet, or expired while the server was away), a JWT-SVID
  could not be minted, or the agent is shutting down; clients retry;
- PERMISSION_DENIED ``no identity issued``: no entry of the agent matches the caller; clients
  retry, since an entry may be registered later. The bundle calls need an entry too, as in
  SPIRE's default.

An X509-SVID stream tells the cache the caller wants its SVIDs for as long as it is open
(:meth:`~pyspire.agent.identities.IdentitySource.demand`): SVIDs missing from the cache (beyond
its size bound, or for an entry just added) are minted at once, and the stream holds its first
message until every SVID the caller is entitled to is there, for at most ``first_answer_wait``
seconds (also while the agent waits for its first sync), then answers with what there is. It
does not wait while the server is known to be away: the SVIDs could not come.

Streams send the caller's full view at once and again whenever it changes, and never end with
OK (clients take that for a broken stream): they end when the client goes away, with
PERMISSION_DENIED when the caller's last entry disappears, with UNAVAILABLE when its last valid
X509-SVID expires, or with UNAVAILABLE on shutdown.

FetchX509SVID is the call every workload makes, usually to read one message and hang up, so its
first message is kept cheap: it is built from the source's current snapshot without waiting for
a watch to start, and its encoding is reused for every caller with the same identities at the
same snapshot revision (:class:`~pyspire.agent.workload.revision_cache.RevisionCache`). A
revision names the cache's whole content (SVIDs, keys, bundles), so a reused encoding is never
stale.
"""

from __future__ import annotations

__all__ = [
    "SECURITY_HEADER",
    "WorkloadApiService",
]

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpclib.const
import grpclib.server
import structlog
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from structlog.typing import FilteringBoundLogger

from pyspire.agent.identities import CallerView, Identity, IdentitySource, Snapshot
from pyspire.agent.snapshot_streams import SnapshotStreams, entries_known, svids_settled
from pyspire.agent.workload.attestation import WorkloadAttestation
from pyspire.agent.workload.caller import attest_caller
from pyspire.agent.workload.jwt_validation import filter_foreign_claims, validate_jwt_svid
from pyspire.agent.workload.revision_cache import RevisionCache
from pyspire.proto.claims import encode_claims
from pyspire.proto.gen.codec import workload as wire
from pyspire.proto.messages import (
    EncodedMessage,
    server_stream_route,
    unary_route,
)
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

SECURITY_HEADER = "workload.spiffe.io"
"""The metadata key every Workload API call must carry, with the value ``true``."""

_SERVICE_PREFIX = "/SpiffeWorkloadAPI/"
_NO_IDENTITY = "no identity issued"

X509_RESPONSE_CACHE_SIZE = 256
"""Distinct identity sets whose encoded X509SVIDResponse is kept for the current revision."""

FIRST_ANSWER_WAIT = 10.0
"""Seconds a new stream waits for the caller's SVIDs to be minted (or for the agent's first
sync) before it answers with what there is."""


_X509Response = EncodedMessage[wire.X509SVIDResponse]
"""An encoded ``X509SVIDResponse``, reused for every caller with the same identities."""


def _denied() -> GRPCError:
    return GRPCError(Status.PERMISSION_DENIED, _NO_IDENTITY)


def _no_valid_svid(snapshot: Snapshot, view: CallerView) -> GRPCError:
    """The refusal for a caller without a valid X509-SVID: UNAVAILABLE while it may still get
    one (it is entitled to an entry, or the agent does not know its entries yet)."""
    if not snapshot.synced:
        return GRPCError(Status.UNAVAILABLE, "agent has not synced its entries yet")
    if view.entries:
        return GRPCError(Status.UNAVAILABLE, "no valid x509 svid for the caller yet")
    return _denied()


def _not_entitled(snapshot: Snapshot) -> GRPCError:
    """The refusal for a caller that matches no entry."""
    if not snapshot.synced:
        return GRPCError(Status.UNAVAILABLE, "agent has not synced its entries yet")
    return _denied()


def _td_key(trust_domain: TrustDomain) -> str:
    return f"spiffe://{trust_domain.name}"


class WorkloadApiService:
    """``SpiffeWorkloadAPI`` over an :class:`~pyspire.agent.identities.IdentitySource`.

    Serve it through :class:`pyspire.transport.calls.WithCallContext` with :meth:`gate` as the
    gate, on a unix socket (the handlers read the caller's stream and its peer credentials).
    ``clock`` is the agent's clock, used to judge JWT-SVID expiry and to bound the first
    answer's wait (``first_answer_wait`` seconds). Tokens from a foreign trust domain have their
    claims reduced to ``sub``, ``aud``, ``exp`` and ``allowed_foreign_jwt_claims`` before they
    are shown.
    """

    def __init__(
        self,
        source: IdentitySource,
        attestation: WorkloadAttestation,
        clock: Clock,
        *,
        allowed_foreign_jwt_claims: frozenset[str] = frozenset(),
        first_answer_wait: float = FIRST_ANSWER_WAIT,
        logger: FilteringBoundLogger | None = None,
    ) -> None:
        self._source = source
        self._attestation = attestation
        self._clock = clock
        self._allowed_foreign_claims = allowed_foreign_jwt_claims
        self._log: FilteringBoundLogger = (
            logger if logger is not None else structlog.get_logger("pyspire.agent.workload")
        )
        self._streams = SnapshotStreams(
            source,
            clock,
            first_answer_wait=first_answer_wait,
            shutting_down="workload api is shutting down",
        )
        self._x509_responses: RevisionCache[tuple[str, ...], _X509Response] = RevisionCache(
            X509_RESPONSE_CACHE_SIZE
        )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """The gRPC routes of ``SpiffeWorkloadAPI``, carried as codec messages."""
        return {
            _SERVICE_PREFIX + "FetchX509SVID": server_stream_route(
                self.fetch_x509_svid, wire.X509SVIDRequest
            ),
            _SERVICE_PREFIX + "FetchX509Bundles": server_stream_route(
                self.fetch_x509_bundles, wire.X509BundlesRequest
            ),
            _SERVICE_PREFIX + "FetchJWTSVID": unary_route(self.fetch_jwtsvid, wire.JWTSVIDRequest),
            _SERVICE_PREFIX + "FetchJWTBundles": server_stream_route(
                self.fetch_jwt_bundles, wire.JWTBundlesRequest
            ),
            _SERVICE_PREFIX + "ValidateJWTSVID": unary_route(
                self.validate_jwtsvid, wire.ValidateJWTSVIDRequest
            ),
        }

    # -- lifecycle and gate -----------------------------------------------------------------

    def stop(self) -> None:
        """End every open stream with UNAVAILABLE (clients reconnect to the next agent run);
        calls made afterwards are refused with UNAVAILABLE too."""
        self._streams.stop()

    async def gate(self, method: str, stream: grpclib.server.Stream[Any, Any]) -> None:
        """Refuse a call without exactly one ``workload.spiffe.io: true`` metadata value."""
        self._streams.refuse_if_stopping()
        if not method.startswith(_SERVICE_PREFIX):
            return
        metadata = stream.metadata
        values = metadata.getall(SECURITY_HEADER, []) if metadata is not None else []
        if len(values) != 1 or values[0] != "true":
            raise GRPCError(Status.INVALID_ARGUMENT, "security header missing from request")

    # -- X.509 ------------------------------------------------------------------------------

    async def fetch_x509_svid(self, request: wire.X509SVIDRequest) -> AsyncIterator[_X509Response]:
        selectors = await self._attest()
        last: object = None
        with self._source.demand(selectors):
            async for snapshot in self._streams.snapshots(svids_settled(selectors)):
                caller = snapshot.view(selectors)
                identities = _unique_hints(caller.identities)
                if not identities:
                    raise _no_valid_svid(snapshot, caller)
                bundle = _require_bundle(snapshot)
                federated = _federated_bundles(snapshot, [i.entry for i in identities])
                view = (identities, bundle, federated)
                if view == last:
                    continue
                last = view
                yield self._x509_svid_response(snapshot.revision, identities, bundle, federated)

    def _x509_svid_response(
        self,
        revision: int,
        identities: Sequence[Identity],
        bundle: Bundle,
        federated: Mapping[TrustDomain, Bundle],
    ) -> _X509Response:
        """The encoded response for these identities of the snapshot at ``revision``: from the
        cache when it holds one, otherwise built, encoded and kept."""
        entry_ids = tuple(identity.entry.id for identity in identities)
        cached = self._x509_responses.get(revision, entry_ids)
        if cached is not None:
            return cached
        encoded = _X509Response(
            self._build_x509_svid_response(identities, bundle, federated),
            wire.decode_X509SVIDResponse,
        )
        self._x509_responses.put(revision, entry_ids, encoded)
        return encoded

    def _build_x509_svid_response(
        self,
        identities: Sequence[Identity],
        bundle: Bundle,
        federated: Mapping[TrustDomain, Bundle],
    ) -> bytes:
        svids = []
        for identity in identities:
            svid = identity.svid
            if svid.private_key is None:
                self._log.error("cached x509 svid has no private key", entry_id=identity.entry.id)
                continue
            own = bundle if svid.spiffe_id.trust_domain == bundle.trust_domain else None
            svid_bundle = own or federated.get(svid.spiffe_id.trust_domain)
            if svid_bundle is None:
                self._log.error(
                    "no bundle for the trust domain of a cached x509 svid",
                    entry_id=identity.entry.id,
                    trust_domain=svid.spiffe_id.trust_domain.name,
                )
                continue
            svids.append(
                wire.write_X509SVID(
                    spiffe_id=str(svid.spiffe_id),
                    x509_svid=b"".join(svid.cert_chain),
                    x509_svid_key=svid.private_key,
                    bundle=svid_bundle.x509_authorities_der(),
                    hint=identity.entry.hint,
                )
            )
        if not svids:
            raise _denied()
        return wire.write_X509SVIDResponse(
            svids=svids,
            federated_bundles={
                _td_key(td): federated_bundle.x509_authorities_der()
                for td, federated_bundle in federated.items()
                if federated_bundle.x509_authorities
            },
        )

    async def fetch_x509_bundles(
        self, request: wire.X509BundlesRequest
    ) -> AsyncIterator[EncodedMessage[wire.X509BundlesResponse]]:
        selectors = await self._attest()
        last: dict[str, bytes] | None = None
        async for snapshot in self._streams.snapshots(entries_known):
            bundles = _caller_bundles(snapshot, selectors)
            encoded = {
                _td_key(td): bundle.x509_authorities_der()
                for td, bundle in bundles.items()
                if bundle.x509_authorities
            }
            if encoded == last:
                continue
            last = encoded
            yield EncodedMessage(
                wire.write_X509BundlesResponse(bundles=encoded), wire.decode_X509BundlesResponse
            )

    # -- JWT --------------------------------------------------------------------------------

    async def fetch_jwtsvid(
        self, request: wire.JWTSVIDRequest
    ) -> EncodedMessage[wire.JWTSVIDResponse]:
        audience = list(request.audience)
        if not audience or not all(audience):
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        requested: SpiffeId | None = None
        if request.spiffe_id:
            try:
                requested = SpiffeId.parse(request.spiffe_id)
            except InvalidArgumentError as error:
                raise GRPCError(
                    Status.INVALID_ARGUMENT, f"invalid requested SPIFFE ID: {error}"
                ) from None
        selectors = await self._attest()
        snapshot = self._source.snapshot()
        entries = _unique_hint_entries(snapshot.view(selectors).entries)
        if requested is not None:
            entries = tuple(entry for entry in entries if entry.spiffe_id == requested)
        if not entries:
            raise _not_entitled(snapshot)
        svids = []
        for entry in entries:
            try:
                jwt_svid = await self._source.fetch_jwt_svid(entry, audience)
            except Exception as error:  # any failure to mint is "try again later"
                self._log.warning(
                    "could not fetch jwt svid",
                    entry_id=entry.id,
                    spiffe_id=str(entry.spiffe_id),
                    error=str(error) or type(error).__name__,
                )
                raise GRPCError(Status.UNAVAILABLE, f"could not fetch JWT-SVID: {error}") from None
            svids.append(
                wire.write_JWTSVID(
                    spiffe_id=str(entry.spiffe_id), svid=jwt_svid.token, hint=entry.hint
                )
            )
        return EncodedMessage(wire.write_JWTSVIDResponse(svids=svids), wire.decode_JWTSVIDResponse)

    async def fetch_jwt_bundles(
        self, request: wire.JWTBundlesRequest
    ) -> AsyncIterator[EncodedMessage[wire.JWTBundlesResponse]]:
        selectors = await self._attest()
        last: dict[str, bytes] | None = None
        async for snapshot in self._streams.snapshots(entries_known):
            bundles = _caller_bundles(snapshot, selectors)
            encoded = {_td_key(td): bundle.jwt_bundle_jwks() for td, bundle in bundles.items()}
            if encoded == last:
                continue
            last = encoded
            yield EncodedMessage(
                wire.write_JWTBundlesResponse(bundles=encoded), wire.decode_JWTBundlesResponse
            )

    async def validate_jwtsvid(
        self, request: wire.ValidateJWTSVIDRequest
    ) -> EncodedMessage[wire.ValidateJWTSVIDResponse]:
        audience = request.audience
        token = request.svid
        if not audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        if not token:
            raise GRPCError(Status.INVALID_ARGUMENT, "svid must be specified")
        selectors = await self._attest()
        snapshot = self._source.snapshot()
        bundles = _caller_bundles(snapshot, selectors)
        try:
            validated = await asyncio.to_thread(
                validate_jwt_svid, token, audience, bundles, self._clock.now()
            )
        except InvalidArgumentError as error:
            self._log.info("jwt svid rejected", audience=audience, reason=str(error))
            raise GRPCError(Status.INVALID_ARGUMENT, str(error)) from None
        claims: Mapping[str, Any] = validated.claims
        own = snapshot.bundle.trust_domain if snapshot.bundle is not None else None
        if validated.spiffe_id.trust_domain != own:
            claims = filter_foreign_claims(claims, self._allowed_foreign_claims)
        return EncodedMessage(
            wire.write_ValidateJWTSVIDResponse(
                spiffe_id=str(validated.spiffe_id),
                claims=encode_claims(_with_audience_list(claims)),
            ),
            wire.decode_ValidateJWTSVIDResponse,
        )

    # -- shared -----------------------------------------------------------------------------

    async def _attest(self) -> frozenset[Selector]:
        """The caller's selectors; UNAVAILABLE when they cannot be established."""
        return await attest_caller(self._attestation, self._log)


def _unique_hints(identities: Sequence[Identity]) -> tuple[Identity, ...]:
    """Drop identities whose non-empty hint an earlier (older) identity already has."""
    kept = {entry.id for entry in _unique_hint_entries([i.entry for i in identities])}
    return tuple(identity for identity in identities if identity.entry.id in kept)


def _unique_hint_entries(entries: Sequence[RegistrationEntry]) -> tuple[RegistrationEntry, ...]:
    """Drop entries whose non-empty hint an earlier (older) entry already has."""
    seen: set[str] = set()
    kept = []
    for entry in entries:
        hint = entry.hint
        if hint:
            if hint in seen:
                continue
            seen.add(hint)
        kept.append(entry)
    return tuple(kept)


def _require_bundle(snapshot: Snapshot) -> Bundle:
    if snapshot.bundle is None:
        raise GRPCError(Status.UNAVAILABLE, "agent has no trust bundle yet")
    return snapshot.bundle


def _federated_bundles(
    snapshot: Snapshot, entries: Sequence[RegistrationEntry]
) -> dict[TrustDomain, Bundle]:
    """The federated bundles of the trust domains these entries federate with (those the agent
    has)."""
    found: dict[TrustDomain, Bundle] = {}
    for entry in entries:
        for trust_domain in entry.federates_with:
            bundle = snapshot.federated_bundles.get(trust_domain)
            if bundle is not None:
                found[trust_domain] = bundle
    return found


def _caller_bundles(
    snapshot: Snapshot, selectors: frozenset[Selector]
) -> dict[TrustDomain, Bundle]:
    """The bundles a caller may see: our own and those its entries federate with.
    PERMISSION_DENIED when it matches no entry, UNAVAILABLE when we do not know the entries or
    have no bundle yet."""
    entries = snapshot.view(selectors).entries
    if not entries:
        raise _not_entitled(snapshot)
    bundle = _require_bundle(snapshot)
    found = {bundle.trust_domain: bundle}
    for trust_domain, federated in _federated_bundles(snapshot, entries).items():
        found.setdefault(trust_domain, federated)
    return found


def _with_audience_list(claims: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(claims)
    audience = result.get("aud")
    if isinstance(audience, str):
        result["aud"] = [audience]
    return result
