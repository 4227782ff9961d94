"""A complete datastore held in memory: the reference behaviour of the datastore contract.

:class:`MemoryDataStore` implements every method of
:class:`~pyspire_sdk.plugins.datastore.DataStore` on dictionaries in this process, so it keeps
the contract's promises with no storage at all. A new datastore plugin starts from it (the
``pyspire-plugin new --type datastore`` scaffold subclasses it) and replaces it method by method
with its storage, the :class:`~pyspire_sdk.testing.datastore_contract.DataStoreContract` suite
telling it when a replaced method behaves differently. State is lost when the process exits.

Atomicity comes from the event loop: no method awaits anything between reading and writing
state, so every call (a batch included) runs whole before any other call sees its effects.
"""

from __future__ import annotations

__all__ = ["MemoryDataStore"]

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import structlog
from structlog.typing import FilteringBoundLogger

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PluginError,
    PyspireError,
)
from pyspire_sdk.model import AttestedNode, FederationRelationship, JoinToken, RegistrationEntry
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import (
    ENTRY_MASK_FIELDS,
    FEDERATION_RELATIONSHIP_MASK_FIELDS,
    NODE_MASK_FIELDS,
    AttestedNodePage,
    BundleDeleteMode,
    BundlePage,
    ChangeEvent,
    ChangeKind,
    EntryFilter,
    EntryPage,
    FailedPreconditionError,
    FederationRelationshipPage,
    MatchBehavior,
    NodeFilter,
    Page,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.stored_records import (
    appended_bundle,
    check_mask,
    checked_bundle_update,
    dedupe,
    duplicate_entry_error,
    new_entry_id,
    normalize_entry,
    pruned_bundle,
    updated_entry,
)

T = TypeVar("T")

_Identity = tuple[SpiffeId, SpiffeId, frozenset[Selector]]


def _identity(entry: RegistrationEntry) -> _Identity:
    return entry.spiffe_id, entry.parent_id, frozenset(entry.selectors)


def _set_matches(have: frozenset[T], want: frozenset[T], match: MatchBehavior) -> bool:
    """Whether an object's set ``have`` matches a filter's set ``want``; an empty set never."""
    if not have:
        return False
    if match is MatchBehavior.EXACT:
        return have == want
    if match is MatchBehavior.SUBSET:
        return have <= want
    if match is MatchBehavior.SUPERSET:
        return have >= want
    return not have.isdisjoint(want)


def _entry_matches(entry: RegistrationEntry, entry_filter: EntryFilter | None) -> bool:
    if entry_filter is None:
        return True
    f = entry_filter
    if f.by_spiffe_id is not None and entry.spiffe_id != f.by_spiffe_id:
        return False
    if f.by_parent_id is not None and entry.parent_id != f.by_parent_id:
        return False
    if f.by_hint is not None and entry.hint != f.by_hint:
        return False
    if f.by_downstream is not None and entry.downstream != f.by_downstream:
        return False
    if f.by_selectors is not None and not _set_matches(
        frozenset(entry.selectors), frozenset(f.by_selectors.selectors), f.by_selectors.match
    ):
        return False
    return f.by_federates_with is None or _set_matches(
        frozenset(entry.federates_with),
        frozenset(f.by_federates_with.trust_domains),
        f.by_federates_with.match,
    )


def _node_matches(node: AttestedNode, node_filter: NodeFilter | None) -> bool:
    if node_filter is None:
        return True
    f = node_filter
    if f.by_attestation_type is not None and node.attestation_type != f.by_attestation_type:
        return False
    if f.by_banned is not None and node.banned != f.by_banned:
        return False
    if f.by_can_reattest is not None and node.can_reattest != f.by_can_reattest:
        return False
    if f.by_expires_before is not None and (
        node.x509_svid_expires_at is None or node.x509_svid_expires_at >= f.by_expires_before
    ):
        return False
    return f.by_selectors is None or _set_matches(
        frozenset(node.selectors), frozenset(f.by_selectors.selectors), f.by_selectors.match
    )


def _page_of(items: Iterable[tuple[str, T]], page: Page | None) -> tuple[list[T], str]:
    """The first ``page.size`` items (all for size 0) of ``(token, item)`` pairs, with the
    token of the last one returned when more follow."""
    size = page.size if page is not None else 0
    chosen: list[T] = []
    last = ""
    for token, item in items:
        if size and len(chosen) == size:
            return chosen, last
        chosen.append(item)
        last = token
    return chosen, ""


def _sequence_token(prefix: str, page: Page | None) -> int:
    """The position a ``<prefix>:<n>`` token stands for, 0 for the first page."""
    if page is None or not page.token:
        return 0
    kind, _, number = page.token.partition(":")
    if kind != prefix or not number.isdigit():
        raise InvalidArgumentError(f"page token {page.token!r} was not handed out by this store")
    return int(number)


def _name_token(prefix: str, page: Page | None) -> str:
    """The trust domain name a ``<prefix>:<name>`` token stands for, ``""`` for the first
    page."""
    if page is None or not page.token:
        return ""
    kind, separator, name = page.token.partition(":")
    if kind != prefix or not separator or not name:
        raise InvalidArgumentError(f"page token {page.token!r} was not handed out by this store")
    return name


class MemoryDataStore:
    """A :class:`~pyspire_sdk.plugins.datastore.DataStore` whose state lives in this object.

    ``max_entries`` (0 for no limit) caps the registration entries held: a create beyond it
    raises :class:`~pyspire_sdk.plugins.datastore.FailedPreconditionError`. A subclass sets it
    from its configuration before calling :meth:`configure`.
    """

    def __init__(self, *, max_entries: int = 0) -> None:
        self.max_entries = max_entries
        self._state = "new"
        self._clock: Clock = SystemClock()
        self._logger: FilteringBoundLogger = structlog.get_logger()
        self._forget()

    def _forget(self) -> None:
        """Empty every table."""
        self._entries: dict[str, RegistrationEntry] = {}
        self._entry_positions: dict[str, int] = {}
        self._identities: dict[_Identity, str] = {}
        self._next_position = 1
        self._nodes: dict[SpiffeId, AttestedNode] = {}
        self._node_positions: dict[SpiffeId, int] = {}
        self._node_selectors: dict[SpiffeId, tuple[Selector, ...]] = {}
        self._join_tokens: dict[str, JoinToken] = {}
        self._bundles: dict[TrustDomain, Bundle] = {}
        self._journals: dict[str, bytes] = {}
        self._relationships: dict[TrustDomain, FederationRelationship] = {}
        self._events: list[ChangeEvent] = []
        self._last_event_id = 0

    # -- life cycle ---------------------------------------------------------------------------

    async def configure(self, config: Any, host: HostServices) -> None:
        """Start empty, on the host's clock."""
        if self._state != "new":
            raise PluginError(f"datastore is already {self._state}")
        if self.max_entries < 0:
            raise PluginError(f"max_entries must not be negative, found {self.max_entries}")
        self._clock = host.clock
        self._logger = host.logger
        self._state = "configured"

    async def close(self) -> None:
        """Forget everything; closing twice is harmless."""
        self._forget()
        self._state = "closed"

    def _require_open(self) -> None:
        if self._state != "configured":
            detail = "not configured" if self._state == "new" else "closed"
            raise PluginError(f"datastore is {detail}")

    def _event(self, kind: ChangeKind, object_id: str) -> None:
        self._last_event_id += 1
        self._events.append(ChangeEvent(self._last_event_id, kind, object_id, self._clock.now()))

    # -- registration entries -------------------------------------------------------------------

    def _check_federated_bundles(self, entry: RegistrationEntry) -> None:
        missing = [td.name for td in entry.federates_with if td not in self._bundles]
        if missing:
            raise InvalidArgumentError(
                f"entry federates with trust domain(s) without a bundle: {', '.join(missing)}"
            )

    def _create(self, entry: RegistrationEntry) -> tuple[RegistrationEntry, bool]:
        """Store ``entry``, or return the stored entry of the same identity with ``True``."""
        stored = normalize_entry(entry)
        self._check_federated_bundles(stored)
        existing = self._identities.get(_identity(stored))
        if existing is not None:
            return self._entries[existing], True
        if stored.id in self._entries:
            raise AlreadyExistsError(f"an entry with id {stored.id!r} already exists")
        if self.max_entries and len(self._entries) >= self.max_entries:
            raise FailedPreconditionError(
                f"the store holds its maximum of {self.max_entries} registration entries"
            )
        stored = replace(
            stored,
            id=stored.id or new_entry_id(),
            created_at=self._clock.now(),
            revision_number=0,
        )
        self._put_entry(stored)
        self._entry_positions[stored.id] = self._next_position
        self._next_position += 1
        self._event(ChangeKind.ENTRY, stored.id)
        return stored, False

    def _create_new(self, entry: RegistrationEntry) -> RegistrationEntry:
        stored, existed = self._create(entry)
        if existed:
            raise duplicate_entry_error(entry, stored.id)
        return stored

    def _put_entry(self, entry: RegistrationEntry) -> None:
        previous = self._entries.get(entry.id)
        if previous is not None:
            del self._identities[_identity(previous)]
        self._entries[entry.id] = entry
        self._identities[_identity(entry)] = entry.id

    def _remove_entry(self, entry_id: str) -> RegistrationEntry:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            raise NotFoundError(f"entry {entry_id!r} not found")
        del self._identities[_identity(entry)]
        del self._entry_positions[entry_id]
        self._event(ChangeKind.ENTRY, entry_id)
        return entry

    def _update(self, entry: RegistrationEntry, fields: frozenset[str]) -> RegistrationEntry:
        current = self._entries.get(entry.id)
        if current is None:
            raise NotFoundError(f"entry {entry.id!r} not found")
        updated = updated_entry(current, entry, fields)
        self._check_federated_bundles(updated)
        other = self._identities.get(_identity(updated))
        if other is not None and other != updated.id:
            raise duplicate_entry_error(updated, other)
        self._put_entry(updated)
        self._event(ChangeKind.ENTRY, updated.id)
        return updated

    async def create_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        self._require_open()
        return self._create_new(entry)

    async def create_entry_if_not_exists(
        self, entry: RegistrationEntry
    ) -> tuple[RegistrationEntry, bool]:
        self._require_open()
        return self._create(entry)

    async def create_entries(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[RegistrationEntry | PyspireError]:
        self._require_open()
        return [_result_or_error(self._create_new, entry) for entry in entries]

    async def create_entries_if_not_exist(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[tuple[RegistrationEntry, bool] | PyspireError]:
        self._require_open()
        return [_result_or_error(self._create, entry) for entry in entries]

    async def get_entry(self, entry_id: str) -> RegistrationEntry | None:
        self._require_open()
        return self._entries.get(entry_id)

    def _matching_entries(
        self, entry_filter: EntryFilter | None
    ) -> Iterator[tuple[int, RegistrationEntry]]:
        for entry_id, entry in self._entries.items():
            if _entry_matches(entry, entry_filter):
                yield self._entry_positions[entry_id], entry

    async def list_entries(
        self, entry_filter: EntryFilter | None = None, page: Page | None = None
    ) -> EntryPage:
        self._require_open()
        after = _sequence_token("entry", page)
        entries, token = _page_of(
            (
                (f"entry:{position}", entry)
                for position, entry in self._matching_entries(entry_filter)
                if position > after
            ),
            page,
        )
        return EntryPage(tuple(entries), token)

    async def count_entries(self, entry_filter: EntryFilter | None = None) -> int:
        self._require_open()
        return sum(1 for _ in self._matching_entries(entry_filter))

    async def update_entry(
        self, entry: RegistrationEntry, mask: frozenset[str] | None = None
    ) -> RegistrationEntry:
        self._require_open()
        return self._update(entry, check_mask(mask, ENTRY_MASK_FIELDS, "entry"))

    async def delete_entry(self, entry_id: str) -> RegistrationEntry:
        self._require_open()
        return self._remove_entry(entry_id)

    async def update_entries(
        self, entries: Sequence[RegistrationEntry], mask: frozenset[str] | None = None
    ) -> list[RegistrationEntry | PyspireError]:
        self._require_open()
        fields = check_mask(mask, ENTRY_MASK_FIELDS, "entry")
        return [_result_or_error(self._update, entry, fields) for entry in entries]

    async def delete_entries(
        self, entry_ids: Sequence[str]
    ) -> list[RegistrationEntry | PyspireError]:
        self._require_open()
        return [_result_or_error(self._remove_entry, entry_id) for entry_id in entry_ids]

    async def prune_registration_entries(self, expires_before: datetime) -> int:
        self._require_open()
        expired = [
            entry.id
            for entry in self._entries.values()
            if entry.expires_at is not None and entry.expires_at < expires_before
        ]
        for entry_id in expired:
            self._remove_entry(entry_id)
        return len(expired)

    async def list_all_entries(self) -> list[RegistrationEntry]:
        self._require_open()
        return list(self._entries.values())

    # -- attested nodes ---------------------------------------------------------------------------

    def _with_selectors(self, node: AttestedNode) -> AttestedNode:
        return replace(node, selectors=self._node_selectors.get(node.spiffe_id, ()))

    def _set_selectors(self, spiffe_id: SpiffeId, selectors: Iterable[Selector]) -> None:
        kept = dedupe(selectors)
        if kept:
            self._node_selectors[spiffe_id] = kept
        else:
            self._node_selectors.pop(spiffe_id, None)

    def _node(self, spiffe_id: SpiffeId) -> AttestedNode:
        node = self._nodes.get(spiffe_id)
        if node is None:
            raise NotFoundError(f"attested node {spiffe_id} not found")
        return node

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        self._require_open()
        if node.spiffe_id in self._nodes:
            raise AlreadyExistsError(f"attested node {node.spiffe_id} already exists")
        if node.selectors:
            self._set_selectors(node.spiffe_id, node.selectors)
        self._nodes[node.spiffe_id] = replace(node, selectors=())
        self._node_positions[node.spiffe_id] = self._next_position
        self._next_position += 1
        self._event(ChangeKind.NODE, str(node.spiffe_id))
        return self._with_selectors(node)

    async def get_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        self._require_open()
        node = self._nodes.get(spiffe_id)
        return None if node is None else self._with_selectors(node)

    def _matching_nodes(self, node_filter: NodeFilter | None) -> Iterator[tuple[int, AttestedNode]]:
        for spiffe_id, stored in self._nodes.items():
            node = self._with_selectors(stored)
            if _node_matches(node, node_filter):
                yield self._node_positions[spiffe_id], node

    async def list_attested_nodes(
        self, node_filter: NodeFilter | None = None, page: Page | None = None
    ) -> AttestedNodePage:
        self._require_open()
        after = _sequence_token("node", page)
        nodes, token = _page_of(
            (
                (f"node:{position}", node)
                for position, node in self._matching_nodes(node_filter)
                if position > after
            ),
            page,
        )
        return AttestedNodePage(tuple(nodes), token)

    async def count_attested_nodes(self, node_filter: NodeFilter | None = None) -> int:
        self._require_open()
        return sum(1 for _ in self._matching_nodes(node_filter))

    async def update_attested_node(
        self, node: AttestedNode, mask: frozenset[str] | None = None
    ) -> AttestedNode:
        self._require_open()
        fields = check_mask(mask, NODE_MASK_FIELDS, "attested node")
        current = self._node(node.spiffe_id)
        changes = {name: getattr(node, name) for name in fields if name != "selectors"}
        self._nodes[node.spiffe_id] = replace(current, **changes)
        if "selectors" in fields:
            self._set_selectors(node.spiffe_id, node.selectors)
        self._event(ChangeKind.NODE, str(node.spiffe_id))
        return self._with_selectors(self._nodes[node.spiffe_id])

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        self._require_open()
        node = self._with_selectors(self._node(spiffe_id))
        del self._nodes[spiffe_id]
        del self._node_positions[spiffe_id]
        self._node_selectors.pop(spiffe_id, None)
        self._event(ChangeKind.NODE, str(spiffe_id))
        return node

    async def set_node_selectors(
        self, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        self._require_open()
        self._set_selectors(spiffe_id, selectors)
        self._event(ChangeKind.NODE, str(spiffe_id))

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]:
        self._require_open()
        return self._node_selectors.get(spiffe_id, ())

    async def list_all_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        self._require_open()
        return dict(self._node_selectors)

    # -- join tokens ------------------------------------------------------------------------------

    async def create_join_token(self, token: JoinToken) -> JoinToken:
        self._require_open()
        if not token.token:
            raise InvalidArgumentError("join token value is empty")
        if token.token in self._join_tokens:
            raise AlreadyExistsError("a join token with this value already exists")
        self._join_tokens[token.token] = token
        return token

    async def fetch_join_token(self, token: str) -> JoinToken | None:
        self._require_open()
        return self._join_tokens.get(token)

    async def delete_join_token(self, token: str) -> None:
        self._require_open()
        if self._join_tokens.pop(token, None) is None:
            raise NotFoundError("join token not found")

    async def consume_join_token(self, token: str) -> JoinToken:
        self._require_open()
        found = self._join_tokens.pop(token, None)
        if found is None:
            raise NotFoundError("join token not found (never created, or already used)")
        return found

    async def prune_join_tokens(self, expires_before: datetime) -> int:
        self._require_open()
        expired = [t for t, token in self._join_tokens.items() if token.expires_at < expires_before]
        for value in expired:
            del self._join_tokens[value]
        return len(expired)

    # -- bundles ----------------------------------------------------------------------------------

    async def create_bundle(self, bundle: Bundle) -> Bundle:
        self._require_open()
        if bundle.trust_domain in self._bundles:
            raise AlreadyExistsError(f"bundle for trust domain {bundle.trust_domain} exists")
        self._bundles[bundle.trust_domain] = bundle
        return bundle

    async def get_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        self._require_open()
        return self._bundles.get(trust_domain)

    async def list_bundles(self, page: Page | None = None) -> BundlePage:
        self._require_open()
        after = _name_token("bundle", page)
        names = sorted(td.name for td in self._bundles if td.name > after)
        bundles, token = _page_of(
            ((f"bundle:{name}", self._bundles[TrustDomain(name)]) for name in names), page
        )
        return BundlePage(tuple(bundles), token)

    async def count_bundles(self) -> int:
        self._require_open()
        return len(self._bundles)

    async def set_bundle(self, bundle: Bundle) -> Bundle:
        self._require_open()
        self._bundles[bundle.trust_domain] = bundle
        return bundle

    async def update_bundle(
        self, trust_domain: TrustDomain, mutate: Callable[[Bundle | None], Bundle]
    ) -> Bundle:
        self._require_open()
        updated = checked_bundle_update(trust_domain, mutate(self._bundles.get(trust_domain)))
        self._bundles[trust_domain] = updated
        return updated

    async def append_bundle(self, bundle: Bundle) -> Bundle:
        self._require_open()
        current = self._bundles.get(bundle.trust_domain)
        if current is None:
            self._bundles[bundle.trust_domain] = bundle
            return bundle
        grown = appended_bundle(current, bundle)
        if grown is None:
            return current
        self._bundles[bundle.trust_domain] = grown
        return grown

    async def delete_bundle(
        self, trust_domain: TrustDomain, mode: BundleDeleteMode = BundleDeleteMode.RESTRICT
    ) -> None:
        self._require_open()
        if trust_domain not in self._bundles:
            raise NotFoundError(f"bundle for trust domain {trust_domain} not found")
        federating = [e for e in self._entries.values() if trust_domain in e.federates_with]
        if federating and mode is BundleDeleteMode.RESTRICT:
            raise FailedPreconditionError(
                f"bundle for trust domain {trust_domain} is federated with by "
                f"{len(federating)} registration entries: delete them or use mode DELETE or "
                "DISSOCIATE"
            )
        for entry in federating:
            if mode is BundleDeleteMode.DELETE:
                self._remove_entry(entry.id)
            else:
                self._put_entry(
                    replace(
                        entry,
                        federates_with=tuple(
                            td for td in entry.federates_with if td != trust_domain
                        ),
                        revision_number=entry.revision_number + 1,
                    )
                )
                self._event(ChangeKind.ENTRY, entry.id)
        del self._bundles[trust_domain]

    async def prune_bundle(self, trust_domain: TrustDomain, expires_before: datetime) -> bool:
        self._require_open()
        current = self._bundles.get(trust_domain)
        if current is None:
            return False
        pruned = pruned_bundle(current, expires_before)
        if pruned is None:
            return False
        self._bundles[trust_domain] = pruned
        self._logger.info("pruned bundle", trust_domain=trust_domain.name)
        return True

    # -- CA journal -------------------------------------------------------------------------------

    async def get_ca_journal(self, name: str) -> bytes | None:
        self._require_open()
        return self._journals.get(name)

    async def set_ca_journal(self, name: str, data: bytes) -> None:
        self._require_open()
        self._journals[name] = bytes(data)

    # -- federation relationships -------------------------------------------------------------

    def _relationship(self, trust_domain: TrustDomain) -> FederationRelationship:
        found = self._relationships.get(trust_domain)
        if found is None:
            raise NotFoundError(f"federation relationship with {trust_domain} not found")
        return found

    async def create_federation_relationship(
        self, relationship: FederationRelationship
    ) -> FederationRelationship:
        self._require_open()
        if relationship.trust_domain in self._relationships:
            raise AlreadyExistsError(
                f"federation relationship with {relationship.trust_domain} already exists"
            )
        self._relationships[relationship.trust_domain] = relationship
        return relationship

    async def get_federation_relationship(
        self, trust_domain: TrustDomain
    ) -> FederationRelationship | None:
        self._require_open()
        return self._relationships.get(trust_domain)

    async def list_federation_relationships(
        self, page: Page | None = None
    ) -> FederationRelationshipPage:
        self._require_open()
        after = _name_token("relationship", page)
        names = sorted(td.name for td in self._relationships if td.name > after)
        relationships, token = _page_of(
            ((f"relationship:{name}", self._relationships[TrustDomain(name)]) for name in names),
            page,
        )
        return FederationRelationshipPage(tuple(relationships), token)

    async def update_federation_relationship(
        self, relationship: FederationRelationship, mask: frozenset[str] | None = None
    ) -> FederationRelationship:
        self._require_open()
        fields = check_mask(mask, FEDERATION_RELATIONSHIP_MASK_FIELDS, "federation relationship")
        current = self._relationship(relationship.trust_domain)
        updated = replace(current, **{name: getattr(relationship, name) for name in fields})
        self._relationships[relationship.trust_domain] = updated
        return updated

    async def delete_federation_relationship(self, trust_domain: TrustDomain) -> None:
        self._require_open()
        self._relationship(trust_domain)
        del self._relationships[trust_domain]

    # -- change feed --------------------------------------------------------------------------

    async def list_change_events(
        self, after_event_id: int = 0, limit: int = 0
    ) -> list[ChangeEvent]:
        self._require_open()
        events = [event for event in self._events if event.event_id > after_event_id]
        return events[:limit] if limit else events

    async def last_change_event_id(self) -> int:
        self._require_open()
        return self._last_event_id

    async def prune_change_events(self, before: datetime) -> int:
        self._require_open()
        kept = [event for event in self._events if event.created_at >= before]
        pruned = len(self._events) - len(kept)
        self._events = kept
        return pruned


R = TypeVar("R")


def _result_or_error(call: Callable[..., R], *args: Any) -> R | PyspireError:
    """What ``call`` returns, or the :class:`PyspireError` it raises (one item of a batch)."""
    try:
        return call(*args)
    except PyspireError as error:
        return error
