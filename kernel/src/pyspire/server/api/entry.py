"""The Entry API (``spire.api.server.entry.v1.Entry``): registration entries for operators, and
the entries each agent is authorized for.

Administration (callers: local or admin): CountEntries and ListEntries with SPIRE's filters,
paging and output masks; GetEntry; BatchCreateEntry, BatchUpdateEntry and BatchDeleteEntry with
one result per item, in request order. Every item is validated with
:func:`pyspire.registry.validation.validate_entry`; the valid items of a batch go to the
datastore in one call (one transaction, one commit) whose results are per item, so an item that
fails leaves no trace and does not stop the others. After a batch that wrote something, the
registry cache is refreshed once before the call returns, so agents see the change on their next
sync rather than after the next cache interval.

Agents (caller: an attested agent): GetAuthorizedEntries and SyncAuthorizedEntries answer from
:class:`~pyspire.registry.cache.RegistryCache` (no datastore round trip) and assemble responses
from entries encoded once (:mod:`pyspire.server.api.encoded`).

Every method reads its request and writes its response with the generated codecs
(:mod:`pyspire.proto.gen.codec`, :mod:`pyspire.proto.entries`): requests arrive as codec
messages and responses leave as :class:`~pyspire.proto.messages.EncodedMessage` bytes, which
callers in the process read back with ``decode()``.

Bounded responses: no response is larger than ``max_response_bytes`` (4 MiB, gRPC's default
receive limit). ListEntries ends a page early (with a ``next_page_token``) when the next entry
would not fit, as the API allows ("the server may further constrain" the page size);
SyncAuthorizedEntries sends entries in pages that fit; GetAuthorizedEntries, which cannot page,
fails with RESOURCE_EXHAUSTED naming SyncAuthorizedEntries instead of sending a response the
agent would refuse.

The ``by_downstream`` filter is not part of our ``ListEntriesRequest.Filter`` (see
:mod:`pyspire.proto`); a peer sending it has it ignored as an unknown field.
"""

from __future__ import annotations

__all__ = [
    "LIST_CHUNK_SIZE",
    "SYNC_PAGE_SIZE",
    "EntryService",
    "entry_filter_from_proto",
]

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpclib.const
import structlog
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.proto.bundle_digest import BUNDLES_DIGEST_HEADER, federated_trust_domains
from pyspire.proto.convert import (
    from_timestamp,
    selectors_from_proto,
    spiffe_id_from_proto,
    trust_domains_from_proto,
)
from pyspire.proto.entries import (
    framed_entry_size,
    get_authorized_entries_response,
    list_entries_response,
    mask_fields,
    sync_authorized_entries_response,
)
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as wire
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.messages import EncodedMessage, stream_route, unary_route
from pyspire.registry.validation import validate_entry, validate_entry_id
from pyspire.server.api.agent_replies import AgentReplies
from pyspire.server.api.bundle_answers import BundleAnswers
from pyspire.server.api.encoded import MAX_RESPONSE_BYTES, EncodedEntries
from pyspire.server.authorization import Caller
from pyspire.server.context import ServerContext
from pyspire.transport.calls import current_caller, status_for
from pyspire_sdk.errors import InvalidArgumentError, NotFoundError, PyspireError
from pyspire_sdk.model import ENTRY_SETTABLE_FIELDS, RegistrationEntry
from pyspire_sdk.plugins.datastore import (
    EntryFilter,
    FederatesWithMatch,
    MatchBehavior,
    Page,
    SelectorMatch,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

SYNC_PAGE_SIZE = 500
"""SPIRE's page size for SyncAuthorizedEntries: up to this many entries go in one response;
beyond it the agent first receives revisions, in pages of this size."""

LIST_CHUNK_SIZE = 500
"""How many entries ListEntries reads from the datastore at a time."""

_EDITABLE_FIELDS = ENTRY_SETTABLE_FIELDS
"""Fields BatchUpdateEntry can change (the input mask's other fields are read-only)."""

_TOKEN_RESERVE = framed_entry_size(64)
"""Bytes a ListEntries page keeps free for its ``next_page_token``: room for a token of 64
bytes. Datastore page tokens are row numbers or names, far shorter."""

_log = structlog.get_logger("pyspire.server.api.entry")


_SERVICE = "/spire.api.server.entry.v1.Entry/"

_OK = types_wire.write_Status(code=Status.OK.value, message="OK")


@dataclasses.dataclass(frozen=True, slots=True)
class _SyncAnswer:
    """A full SyncAuthorizedEntries answer as kept, with the federated trust domains its
    entries name (ours excluded)."""

    reply: EncodedMessage[wire.SyncAuthorizedEntriesResponse]
    federates_with: tuple[TrustDomain, ...]


def _status(code: Status, message: str) -> bytes:
    return types_wire.write_Status(code=code.value, message=message)


def _result(status: bytes, entry: bytes | None = None) -> bytes:
    """One BatchCreateEntry or BatchUpdateEntry result (the two have the same fields)."""
    return wire.write_BatchCreateEntryResponse_Result(status=status, entry=entry)


def _member_id(message: types_wire.SPIFFEID, trust_domain: TrustDomain, field: str) -> SpiffeId:
    spiffe_id = spiffe_id_from_proto(message, field)
    if spiffe_id.trust_domain != trust_domain:
        raise InvalidArgumentError(
            f"invalid {field}: '{spiffe_id}' is not a member of trust domain '{trust_domain}'"
        )
    return spiffe_id


def _match(value: int, field: str) -> MatchBehavior:
    try:
        return MatchBehavior(int(value))
    except ValueError:
        raise InvalidArgumentError(
            f"invalid {field}: unknown match behavior {int(value)}"
        ) from None


def entry_filter_from_proto(
    message: wire.ListEntriesRequest_Filter | None, trust_domain: TrustDomain
) -> EntryFilter:
    """The datastore filter for a request's ``filter``; errors name the field at fault.

    IDs must be members of ``trust_domain``; a selector or federates-with filter that is sent
    must hold at least one item, as in SPIRE.
    """
    if message is None:
        return EntryFilter()
    by_spiffe_id = by_parent_id = None
    by_selectors = by_federates_with = None
    if message.by_spiffe_id is not None:
        by_spiffe_id = _member_id(message.by_spiffe_id, trust_domain, "filter.by_spiffe_id")
    if message.by_parent_id is not None:
        by_parent_id = _member_id(message.by_parent_id, trust_domain, "filter.by_parent_id")
    if message.by_selectors is not None:
        selectors = selectors_from_proto(
            message.by_selectors.selectors, "filter.by_selectors.selectors"
        )
        if not selectors:
            raise InvalidArgumentError("invalid filter.by_selectors: empty selector set")
        by_selectors = SelectorMatch(
            selectors, _match(message.by_selectors.match, "filter.by_selectors.match")
        )
    if message.by_federates_with is not None:
        domains = trust_domains_from_proto(
            message.by_federates_with.trust_domains, "filter.by_federates_with.trust_domains"
        )
        if not domains:
            raise InvalidArgumentError("invalid filter.by_federates_with: empty trust domain set")
        by_federates_with = FederatesWithMatch(
            domains, _match(message.by_federates_with.match, "filter.by_federates_with.match")
        )
    return EntryFilter(
        by_spiffe_id=by_spiffe_id,
        by_parent_id=by_parent_id,
        by_selectors=by_selectors,
        by_federates_with=by_federates_with,
        by_hint=message.by_hint or None,
    )


_FIELD_CONVERTERS: dict[str, Callable[[types_wire.Entry, TrustDomain], Any]] = {
    "spiffe_id": lambda m, _: spiffe_id_from_proto(m.spiffe_id, "spiffe_id"),
    "parent_id": lambda m, _: spiffe_id_from_proto(m.parent_id, "parent_id"),
    "selectors": lambda m, _: selectors_from_proto(m.selectors, "selectors"),
    "x509_svid_ttl": lambda m, _: m.x509_svid_ttl,
    "jwt_svid_ttl": lambda m, _: m.jwt_svid_ttl,
    "federates_with": lambda m, _: trust_domains_from_proto(m.federates_with, "federates_with"),
    "admin": lambda m, _: m.admin,
    "downstream": lambda m, _: m.downstream,
    "expires_at": lambda m, _: from_timestamp(m.expires_at, "expires_at"),
    "dns_names": lambda m, _: tuple(m.dns_names),
    "store_svid": lambda m, _: m.store_svid,
    "hint": lambda m, _: m.hint,
}


def _masked_values(
    message: types_wire.Entry, fields: frozenset[str], td: TrustDomain
) -> dict[str, Any]:
    return {name: _FIELD_CONVERTERS[name](message, td) for name in sorted(fields)}


def _update_invalid(reason: str) -> bytes:
    return _result(_status(Status.INVALID_ARGUMENT, f"failed to convert entry: {reason}"))


def _input_fields(mask: types_wire.EntryMask | None) -> frozenset[str]:
    """The fields an update changes: all editable ones without a mask, else those set true."""
    if mask is None:
        return _EDITABLE_FIELDS
    return frozenset(name for name in _EDITABLE_FIELDS if getattr(mask, name))


def _listed(entries: list[bytes], token: str) -> EncodedMessage[wire.ListEntriesResponse]:
    return EncodedMessage(list_entries_response(entries, token), wire.decode_ListEntriesResponse)


def _synced(
    *, revisions: Sequence[bytes] = (), entries: Sequence[bytes] = (), more: bool = False
) -> EncodedMessage[wire.SyncAuthorizedEntriesResponse]:
    return EncodedMessage(
        sync_authorized_entries_response(revisions=revisions, entries=entries, more=more),
        wire.decode_SyncAuthorizedEntriesResponse,
    )


def _agent_id() -> SpiffeId:
    try:
        caller = current_caller()
    except LookupError:
        caller = None
    if not isinstance(caller, Caller) or caller.spiffe_id is None:
        raise GRPCError(Status.INTERNAL, "caller ID missing from request context")
    return caller.spiffe_id


class EntryService:
    """``spire.api.server.entry.v1.Entry`` over a :class:`ServerContext`.

    ``encoded`` is the shared cache of encoded entries (one per server); ``sync_page_size`` and
    ``max_response_bytes`` bound SyncAuthorizedEntries pages and every response. With
    ``bundles`` (the Bundle service's kept answers), SyncAuthorizedEntries offers the digest of
    the bundles the agent fetches next in its initial metadata
    (:mod:`pyspire.proto.bundle_digest`); without, it sends no such header, as SPIRE does.
    """

    def __init__(
        self,
        context: ServerContext,
        *,
        encoded: EncodedEntries | None = None,
        bundles: BundleAnswers | None = None,
        sync_page_size: int = SYNC_PAGE_SIZE,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if sync_page_size < 1:
            raise InvalidArgumentError(f"sync_page_size {sync_page_size} must be at least 1")
        if max_response_bytes < 256:
            raise InvalidArgumentError(
                f"max_response_bytes {max_response_bytes} must be at least 256"
            )
        self._context = context
        server_id = SpiffeId.from_segments(context.trust_domain, "spire", "server")
        self._placeholder = RegistrationEntry(
            spiffe_id=server_id, parent_id=server_id, selectors=()
        )
        self._encoded = encoded if encoded is not None else EncodedEntries()
        self._bundles = bundles
        self._replies: AgentReplies[_SyncAnswer] = AgentReplies()
        self._sync_page_size = sync_page_size
        self._max_bytes = max_response_bytes

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """The gRPC routes of ``spire.api.server.entry.v1.Entry``, carried as codec messages."""
        return {
            _SERVICE + "CountEntries": unary_route(self.count_entries, wire.CountEntriesRequest),
            _SERVICE + "ListEntries": unary_route(self.list_entries, wire.ListEntriesRequest),
            _SERVICE + "GetEntry": unary_route(self.get_entry, wire.GetEntryRequest),
            _SERVICE + "BatchCreateEntry": unary_route(
                self.batch_create_entry, wire.BatchCreateEntryRequest
            ),
            _SERVICE + "BatchUpdateEntry": unary_route(
                self.batch_update_entry, wire.BatchUpdateEntryRequest
            ),
            _SERVICE + "BatchDeleteEntry": unary_route(
                self.batch_delete_entry, wire.BatchDeleteEntryRequest
            ),
            _SERVICE + "GetAuthorizedEntries": unary_route(
                self.get_authorized_entries, wire.GetAuthorizedEntriesRequest
            ),
            _SERVICE + "SyncAuthorizedEntries": stream_route(
                self.sync_authorized_entries, wire.SyncAuthorizedEntriesRequest
            ),
        }

    @property
    def replies(self) -> AgentReplies[_SyncAnswer]:
        """Each agent's kept full SyncAuthorizedEntries answer."""
        return self._replies

    @property
    def encoded(self) -> EncodedEntries:
        """The cache of encoded entries this service assembles responses from."""
        return self._encoded

    # -- administration ---------------------------------------------------------------------

    async def count_entries(
        self, request: wire.CountEntriesRequest
    ) -> EncodedMessage[wire.CountEntriesResponse]:
        entry_filter = entry_filter_from_proto(request.filter, self._context.trust_domain)
        count = await self._context.datastore.count_entries(entry_filter)
        return EncodedMessage(
            wire.write_CountEntriesResponse(count=count), wire.decode_CountEntriesResponse
        )

    async def list_entries(
        self, request: wire.ListEntriesRequest
    ) -> EncodedMessage[wire.ListEntriesResponse]:
        """One page of matching entries in creation order.

        ``page_size`` 0 asks the server to choose: it returns as many entries as fit in one
        response. Any page ends early when the next entry would not fit; ``next_page_token`` is
        then set, and paging through with it yields every entry exactly once.
        """
        if request.page_size < 0:
            raise InvalidArgumentError(
                f"invalid page_size {request.page_size}: must not be negative"
            )
        entry_filter = entry_filter_from_proto(request.filter, self._context.trust_domain)
        fields = mask_fields(request.output_mask)
        datastore = self._context.datastore
        encoded = self._encoded
        budget = self._max_bytes - _TOKEN_RESERVE
        wanted = request.page_size or None
        token = request.page_token
        collected: list[bytes] = []
        used = 0
        while wanted is None or len(collected) < wanted:
            size = (
                LIST_CHUNK_SIZE if wanted is None else min(LIST_CHUNK_SIZE, wanted - len(collected))
            )
            try:
                page = await datastore.list_entries(entry_filter, Page(size, token))
            except InvalidArgumentError as error:
                if token and token == request.page_token:
                    raise InvalidArgumentError(f"invalid page_token: {error}") from None
                raise
            chunk = encoded.encoded_many(page.entries, fields)
            fit = 0
            for data in chunk:
                cost = framed_entry_size(len(data))
                if used + cost > budget:
                    break
                used += cost
                fit += 1
            if fit < len(chunk):
                if fit == 0 and not collected:
                    entry = page.entries[0]
                    raise GRPCError(
                        Status.RESOURCE_EXHAUSTED,
                        f"entry {entry.id!r} is {len(chunk[0])} bytes encoded, more than the "
                        f"{self._max_bytes}-byte response limit",
                    )
                if fit:
                    # Read the prefix that fits again to learn where the next page starts.
                    page = await datastore.list_entries(entry_filter, Page(fit, token))
                    collected += encoded.encoded_many(page.entries, fields)
                    token = page.next_page_token
                return _listed(collected, token)
            collected += chunk
            token = page.next_page_token
            if not token:
                break
        return _listed(collected, token)

    async def get_entry(self, request: wire.GetEntryRequest) -> EncodedMessage[types_wire.Entry]:
        if not request.id:
            raise InvalidArgumentError("missing ID")
        entry = await self._context.datastore.get_entry(request.id)
        if entry is None:
            raise NotFoundError("entry not found")
        return EncodedMessage(
            self._encoded.encoded(entry, mask_fields(request.output_mask)),
            types_wire.decode_Entry,
        )

    async def batch_create_entry(
        self, request: wire.BatchCreateEntryRequest
    ) -> EncodedMessage[wire.BatchCreateEntryResponse]:
        """Create each entry; per item: OK with the entry as stored, INVALID_ARGUMENT naming
        the field, or ALREADY_EXISTS "similar entry already exists" with the existing entry
        (same SPIFFE ID, parent ID and selector set) as SPIRE does."""
        fields = mask_fields(request.output_mask)
        context = self._context
        results: list[bytes | None] = []
        valid: list[tuple[int, RegistrationEntry]] = []
        for index, message in enumerate(request.entries):
            try:
                valid.append((index, self._entry_to_create(message)))
                results.append(None)
            except InvalidArgumentError as error:
                results.append(
                    _result(_status(Status.INVALID_ARGUMENT, f"failed to convert entry: {error}"))
                )
        outcomes: Sequence[tuple[RegistrationEntry, bool] | PyspireError]
        try:
            outcomes = await context.datastore.create_entries_if_not_exist(
                [entry for _, entry in valid]
            )
        except PyspireError as error:
            outcomes = [error] * len(valid)
        wrote = False
        for (index, entry), outcome in zip(valid, outcomes, strict=True):
            results[index] = self._create_result(entry, outcome, fields)
            wrote = wrote or (not isinstance(outcome, PyspireError) and not outcome[1])
        if wrote:
            await self._refresh_registry()
        return EncodedMessage(
            wire.write_BatchCreateEntryResponse(
                results=[result for result in results if result is not None]
            ),
            wire.decode_BatchCreateEntryResponse,
        )

    def _entry_to_create(self, message: types_wire.Entry) -> RegistrationEntry:
        """The validated entry a create request item asks for; ``InvalidArgumentError`` naming
        the field at fault."""
        context = self._context
        if message.id:
            validate_entry_id(message.id)
        values = _masked_values(message, _EDITABLE_FIELDS, context.trust_domain)
        return validate_entry(
            RegistrationEntry(id=message.id, **values),
            context.trust_domain,
            now=context.clock.now(),
        )

    def _create_result(
        self,
        entry: RegistrationEntry,
        outcome: tuple[RegistrationEntry, bool] | PyspireError,
        fields: frozenset[str],
    ) -> bytes:
        if isinstance(outcome, PyspireError):
            _log.warning("entry not created", spiffe_id=str(entry.spiffe_id), error=str(outcome))
            return _result(_status(status_for(outcome), f"failed to create entry: {outcome}"))
        stored, existed = outcome
        if existed:
            return _result(
                _status(Status.ALREADY_EXISTS, "similar entry already exists"),
                self._encoded.encoded(stored, fields),
            )
        _log.info("entry created", entry_id=stored.id, spiffe_id=str(stored.spiffe_id))
        return _result(_OK, self._encoded.encoded(stored, fields))

    async def batch_update_entry(
        self, request: wire.BatchUpdateEntryRequest
    ) -> EncodedMessage[wire.BatchUpdateEntryResponse]:
        """Change the fields named in ``input_mask`` of each entry (every editable field without
        a mask; the read-only ``revision_number``, ``created_at`` and ``additional_attributes``
        are ignored). Per item: OK with the entry as stored (its revision one higher),
        INVALID_ARGUMENT naming the field, NOT_FOUND "entry not found", or ALREADY_EXISTS when
        the result would duplicate another entry."""
        input_fields = _input_fields(request.input_mask)
        output_fields = mask_fields(request.output_mask)
        results: list[bytes | None] = []
        candidates: list[tuple[int, RegistrationEntry]] = []
        for index, message in enumerate(request.entries):
            candidate = await self._entry_to_update(message, input_fields)
            if isinstance(candidate, bytes):
                results.append(candidate)
                continue
            candidates.append((index, candidate))
            results.append(None)
        outcomes: Sequence[RegistrationEntry | PyspireError]
        try:
            outcomes = await self._context.datastore.update_entries(
                [candidate for _, candidate in candidates], input_fields
            )
        except PyspireError as error:
            outcomes = [error] * len(candidates)
        wrote = False
        for (index, candidate), outcome in zip(candidates, outcomes, strict=True):
            if isinstance(outcome, PyspireError):
                results[index] = self._update_failure(candidate.id, outcome)
                continue
            _log.info("entry updated", entry_id=outcome.id, revision=outcome.revision_number)
            results[index] = _result(_OK, self._encoded.encoded(outcome, output_fields))
            wrote = True
        if wrote:
            await self._refresh_registry()
        return EncodedMessage(
            wire.write_BatchUpdateEntryResponse(
                results=[result for result in results if result is not None]
            ),
            wire.decode_BatchUpdateEntryResponse,
        )

    async def _entry_to_update(
        self, message: types_wire.Entry, input_fields: frozenset[str]
    ) -> RegistrationEntry | bytes:
        """The update a request item asks for, validated; or the item's failed result:
        INVALID_ARGUMENT for a missing id or an invalid field of an existing entry, NOT_FOUND
        for an invalid item whose entry does not exist.

        Only the fields in ``input_fields`` are read from the item and checked (validation of a
        field depends on nothing else); the others hold placeholders the datastore ignores,
        since it changes only the masked fields of the stored entry. So the entry is looked up
        here only for an invalid item, to answer NOT_FOUND before INVALID_ARGUMENT; for a valid
        one, whether it exists is the datastore's answer in the batch write."""
        context = self._context
        if not message.id:
            return _update_invalid("missing ID")
        try:
            values = _masked_values(message, input_fields, context.trust_domain)
            return validate_entry(
                dataclasses.replace(self._placeholder, id=message.id, **values),
                context.trust_domain,
                now=context.clock.now(),
                mask=input_fields,
            )
        except InvalidArgumentError as error:
            invalid = _update_invalid(str(error))
        try:
            exists = await context.datastore.get_entry(message.id) is not None
        except PyspireError as error:
            return self._update_failure(message.id, error)
        return invalid if exists else self._update_failure(message.id, NotFoundError("missing"))

    @staticmethod
    def _update_failure(entry_id: str, error: PyspireError) -> bytes:
        """The failed result of an update, as BatchUpdateEntry reports it."""
        if isinstance(error, NotFoundError):
            return _result(_status(Status.NOT_FOUND, "entry not found"))
        _log.warning("entry not updated", entry_id=entry_id, error=str(error))
        return _result(_status(status_for(error), f"failed to update entry: {error}"))

    async def batch_delete_entry(
        self, request: wire.BatchDeleteEntryRequest
    ) -> EncodedMessage[wire.BatchDeleteEntryResponse]:
        """Delete each id; per item: OK, INVALID_ARGUMENT "missing entry ID" or NOT_FOUND
        "entry not found"."""
        ids = list(request.ids)
        wanted = [entry_id for entry_id in ids if entry_id]
        outcomes: Sequence[RegistrationEntry | PyspireError]
        try:
            outcomes = await self._context.datastore.delete_entries(wanted)
        except PyspireError as error:
            outcomes = [error] * len(wanted)
        by_position = iter(outcomes)
        results: list[bytes] = []
        deleted: list[str] = []
        for entry_id in ids:
            if not entry_id:
                status = _status(Status.INVALID_ARGUMENT, "missing entry ID")
            else:
                outcome = next(by_position)
                if isinstance(outcome, NotFoundError):
                    status = _status(Status.NOT_FOUND, "entry not found")
                elif isinstance(outcome, PyspireError):
                    _log.warning("entry not deleted", entry_id=entry_id, error=str(outcome))
                    status = _status(status_for(outcome), f"failed to delete entry: {outcome}")
                else:
                    _log.info("entry deleted", entry_id=entry_id)
                    status = _OK
                    deleted.append(entry_id)
            results.append(wire.write_BatchDeleteEntryResponse_Result(status=status, id=entry_id))
        if deleted:
            self._encoded.discard(deleted)
            await self._refresh_registry()
        return EncodedMessage(
            wire.write_BatchDeleteEntryResponse(results=results),
            wire.decode_BatchDeleteEntryResponse,
        )

    async def _refresh_registry(self) -> None:
        registry = self._context.registry
        registry.poke()
        try:
            await registry.refresh()
        except PyspireError as error:
            # The write is done; the cache's own loop catches up once the datastore answers.
            _log.warning("registry refresh after an entry write failed", error=str(error))

    # -- agents -----------------------------------------------------------------------------

    def _encode_checked(
        self, entries: Sequence[RegistrationEntry], fields: frozenset[str]
    ) -> tuple[list[bytes], int]:
        """Encoded entries and their total framed size; RESOURCE_EXHAUSTED for an entry that
        could never fit in a response."""
        encoded = self._encoded.encoded_many(entries, fields)
        total = 0
        limit = self._max_bytes - 2
        for entry, data in zip(entries, encoded, strict=True):
            cost = framed_entry_size(len(data))
            if cost > limit:
                raise GRPCError(
                    Status.RESOURCE_EXHAUSTED,
                    f"entry {entry.id!r} is {len(data)} bytes encoded, more than the "
                    f"{self._max_bytes}-byte response limit",
                )
            total += cost
        return encoded, total

    async def get_authorized_entries(
        self, request: wire.GetAuthorizedEntriesRequest
    ) -> EncodedMessage[wire.GetAuthorizedEntriesResponse]:
        """Every entry the calling agent is authorized for (its own children, those of the node
        aliases its selectors match, and their descendants), from memory."""
        agent_id = _agent_id()
        entries = self._context.registry.authorized_entries(agent_id)
        fields = mask_fields(request.output_mask)
        encoded, total = self._encode_checked(entries, fields)
        if total > self._max_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"the {len(entries)} authorized entries take {total} bytes, more than the "
                f"{self._max_bytes}-byte response limit: use SyncAuthorizedEntries",
            )
        return EncodedMessage(
            get_authorized_entries_response(encoded), wire.decode_GetAuthorizedEntriesResponse
        )

    async def sync_authorized_entries(
        self, requests: AsyncIterator[wire.SyncAuthorizedEntriesRequest]
    ) -> AsyncIterator[EncodedMessage[wire.SyncAuthorizedEntriesResponse]]:
        """SPIRE's sync protocol, from a snapshot of the agent's entries taken at the start.

        The first request carries the output mask; ids in it are refused (INVALID_ARGUMENT), as
        in SPIRE. A full answer is kept per agent (:class:`AgentReplies`) and sent again as it
        is while the registry's revision, the mask and every entry's expiry allow. When the entries
        number at most the page size and fit in one response, they are sent at once (``more``
        false) and the call ends. Otherwise the agent receives every entry's revision, in pages
        of the page size with ``more`` set on all but the last; then each request it sends lists
        ids it wants in full and is answered with those entries (ids it is not authorized for are
        skipped; a request naming none gets one empty response), in pages that fit, ``more`` set
        on all but the last page of that answer. The call ends when the agent closes its side.
        """
        agent_id = _agent_id()
        first = await anext(aiter(requests), None)
        if first is None:
            return
        if first.ids:
            raise InvalidArgumentError("specifying IDs on initial request is not supported")
        fields = mask_fields(first.output_mask)
        registry = self._context.registry
        revision = registry.revision
        now = self._context.clock.now()
        kept = self._replies.get(agent_id, revision, fields, now)
        if kept is not None:
            yield await self._offered(kept.reply, kept.federates_with)
            return
        entries = registry.authorized_entries(agent_id)
        encoded, total = self._encode_checked(entries, fields)
        federates_with = federated_trust_domains(entries, self._context.trust_domain)
        if len(entries) <= self._sync_page_size and total + 2 <= self._max_bytes:
            reply = _synced(entries=encoded)
            self._replies.keep(
                agent_id, revision, fields, entries, _SyncAnswer(reply, federates_with)
            )
            yield await self._offered(reply, federates_with)
            return

        revisions = [self._encoded.revision(entry) for entry in entries]
        for index, (page, more) in enumerate(self._pages(revisions)):
            reply = _synced(revisions=page, more=more)
            yield await self._offered(reply, federates_with) if index == 0 else reply

        by_id = {entry.id: data for entry, data in zip(entries, encoded, strict=True)}
        async for request in requests:
            wanted = [
                by_id[entry_id] for entry_id in dict.fromkeys(request.ids) if entry_id in by_id
            ]
            if not wanted:
                yield _synced()
                continue
            for page, more in self._pages(wanted):
                yield _synced(entries=page, more=more)

    async def _offered(
        self,
        reply: EncodedMessage[wire.SyncAuthorizedEntriesResponse],
        federates_with: tuple[TrustDomain, ...],
    ) -> EncodedMessage[wire.SyncAuthorizedEntriesResponse]:
        """``reply`` carrying the digest of the bundles the agent fetches next as initial
        metadata; as it is without ``bundles``, or when they cannot be read now (the agent
        then fetches them and meets the error there)."""
        if self._bundles is None:
            return reply
        try:
            digest = await self._bundles.digest(federates_with)
        except Exception as error:  # the offer is optional, the entries are not
            _log.debug(
                "bundles digest not offered", error=str(error), error_type=type(error).__name__
            )
            return reply
        return EncodedMessage(
            reply.data,
            wire.decode_SyncAuthorizedEntriesResponse,
            metadata={BUNDLES_DIGEST_HEADER: digest},
        )

    def _pages(self, items: list[bytes]) -> list[tuple[list[bytes], bool]]:
        """``items`` cut into pages of at most the page size that fit in one response (with
        room for the ``more`` flag), each paired with whether another page follows."""
        budget = self._max_bytes - 2
        pages: list[list[bytes]] = []
        current: list[bytes] = []
        used = 0
        for data in items:
            cost = framed_entry_size(len(data))
            if current and (len(current) == self._sync_page_size or used + cost > budget):
                pages.append(current)
                current, used = [], 0
            current.append(data)
            used += cost
        if current:
            pages.append(current)
        return [(page, index < len(pages) - 1) for index, page in enumerate(pages)]
