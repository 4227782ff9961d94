"""The datastore plugin type: everything the server persists.

A server has exactly one datastore. It holds registration entries, attested nodes and their
selectors, join tokens, trust bundles (the server's own and federated ones), the CA journal,
federation relationships and a change feed that lets in-memory caches stay current without
re-reading everything.

Contract shared by every method of :class:`DataStore`:

- **Atomic.** Each call is one transaction. A call that raises has changed nothing; a call that
  touches several rows (an entry and its selectors, a bundle delete that also deletes entries)
  is never seen half-written by any other call.
- **Async.** Every operation is a coroutine; none blocks the event loop on I/O.
- **Values in, values out.** Arguments and results are the SDK's frozen dataclasses. Timestamps
  round-trip exactly (microsecond precision, aware UTC). Tuples keep the order they were given
  in, with duplicates dropped (the first occurrence wins).
- **Errors.** :class:`~pyspire_sdk.errors.NotFoundError` when the named object does not exist,
  :class:`~pyspire_sdk.errors.AlreadyExistsError` when a create (or an update) would duplicate an
  existing object, :class:`~pyspire_sdk.errors.InvalidArgumentError` for a malformed argument (an
  unknown mask field, a bad page token, an empty selector filter), :class:`FailedPreconditionError`
  when the stored state forbids the change, and :class:`~pyspire_sdk.errors.UnavailableError` when
  the storage cannot be reached.
- **Batches.** The ``*_entries`` methods take many items and return one result per item, in the
  order given: the stored value, or the :class:`~pyspire_sdk.errors.PyspireError` the single-item
  method would have raised for that item. Items are independent and each is all or nothing: an
  item that fails leaves no row and no change event, and does not stop or undo the others. Items
  apply in order, so an item sees the items before it (a second copy of an entry in one batch is
  a duplicate of the first). A batch is one transaction, so it costs one commit however many
  items it holds, and other callers see none or all of its successful items. Only a failure that
  is not about one item (the storage cannot be reached, a bad mask) raises, and then nothing of
  the batch is written.
- **Change feed.** Every create, update and delete of an entry, and of a node or its selectors,
  appends a :class:`ChangeEvent` in the same transaction. Event ids increase strictly, and an
  event becomes visible only after every event with a lower id is visible, so a reader that
  remembers the last id it saw never misses one.
- **Several servers.** Servers of one trust domain may share one datastore. A datastore that
  can tell a server promptly of changes made through the others offers
  :class:`WatchableDataStore` (PostgreSQL with ``LISTEN``/``NOTIFY``, MySQL by polling the
  event counter and the bundles); without it, servers find those changes when they next read
  the feed and the bundle.

Plugins are registered with the :func:`pyspire_datastores` hook and checked with
:class:`pyspire_sdk.testing.datastore_contract.DataStoreContract`.
"""

from __future__ import annotations

__all__ = [
    "AttestedNodePage",
    "BundleDeleteMode",
    "BundlePage",
    "ChangeEvent",
    "ChangeKind",
    "ChangeListener",
    "ChangeSignal",
    "CopyableDataStore",
    "DataStore",
    "EntryFilter",
    "EntryPage",
    "FailedPreconditionError",
    "FederatesWithMatch",
    "FederationRelationshipPage",
    "MatchBehavior",
    "NodeFilter",
    "Page",
    "SelectorMatch",
    "WatchableDataStore",
    "pyspire_datastores",
]

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Protocol, runtime_checkable

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import FailedPreconditionError, InvalidArgumentError, PyspireError
from pyspire_sdk.model import (
    ENTRY_SETTABLE_FIELDS,
    AttestedNode,
    FederationRelationship,
    JoinToken,
    RegistrationEntry,
)
from pyspire_sdk.plugin import Plugin, PluginRegistration, hookspec
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

ENTRY_MASK_FIELDS: frozenset[str] = ENTRY_SETTABLE_FIELDS
"""Fields of :class:`~pyspire_sdk.model.RegistrationEntry` an update mask may name
(:data:`pyspire_sdk.model.ENTRY_SETTABLE_FIELDS`). ``id``, ``created_at`` and
``revision_number`` belong to the datastore and are never updated."""

NODE_MASK_FIELDS: frozenset[str] = frozenset(
    {
        "attestation_type",
        "x509_svid_serial_number",
        "x509_svid_expires_at",
        "selectors",
        "banned",
        "can_reattest",
        "agent_version",
        "new_x509_svid_serial_number",
        "new_x509_svid_expires_at",
    }
)
"""Fields of :class:`~pyspire_sdk.model.AttestedNode` an update mask may name (all but the ID)."""

FEDERATION_RELATIONSHIP_MASK_FIELDS: frozenset[str] = frozenset(
    {"bundle_endpoint_url", "profile", "endpoint_spiffe_id"}
)
"""Fields of :class:`~pyspire_sdk.model.FederationRelationship` an update mask may name."""

__all__ += ["ENTRY_MASK_FIELDS", "FEDERATION_RELATIONSHIP_MASK_FIELDS", "NODE_MASK_FIELDS"]


class MatchBehavior(IntEnum):
    """How a set filter compares an object's set with the filter's set (SPIRE's numbering).

    With *O* the object's set and *F* the filter's set:

    - ``EXACT``: *O* equals *F*.
    - ``SUBSET``: *O* is a subset of *F* (every selector the entry needs is among *F*; this is
      how a workload with selectors *F* finds its entries).
    - ``SUPERSET``: *O* contains all of *F*.
    - ``ANY``: *O* and *F* share at least one element.

    An object whose set is empty never matches: an entry that federates with no trust domain is
    not returned by any ``by_federates_with`` filter, a node without selectors by no
    ``by_selectors`` filter.
    """

    EXACT = 0
    SUBSET = 1
    SUPERSET = 2
    ANY = 3


@dataclass(frozen=True, slots=True)
class SelectorMatch:
    """A filter on a set of selectors; ``selectors`` must not be empty."""

    selectors: tuple[Selector, ...]
    match: MatchBehavior = MatchBehavior.EXACT

    def __post_init__(self) -> None:
        if not self.selectors:
            raise InvalidArgumentError("selector filter is empty: give at least one selector")


@dataclass(frozen=True, slots=True)
class FederatesWithMatch:
    """A filter on the trust domains an entry federates with; ``trust_domains`` must not be
    empty."""

    trust_domains: tuple[TrustDomain, ...]
    match: MatchBehavior = MatchBehavior.EXACT

    def __post_init__(self) -> None:
        if not self.trust_domains:
            raise InvalidArgumentError(
                "federates_with filter is empty: give at least one trust domain"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryFilter:
    """SPIRE's ListEntries filters. Every filter that is set must hold (they are ANDed); the
    default filter matches every entry."""

    by_spiffe_id: SpiffeId | None = None
    by_parent_id: SpiffeId | None = None
    by_selectors: SelectorMatch | None = None
    by_federates_with: FederatesWithMatch | None = None
    by_hint: str | None = None
    by_downstream: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFilter:
    """SPIRE's ListAgents filters, ANDed; the default filter matches every node.

    ``by_expires_before`` keeps nodes whose ``x509_svid_expires_at`` is set and earlier than the
    given time.
    """

    by_attestation_type: str | None = None
    by_banned: bool | None = None
    by_expires_before: datetime | None = None
    by_selectors: SelectorMatch | None = None
    by_can_reattest: bool | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Which page of a listing to return.

    ``size`` is the most items to return; ``0`` means all remaining items. ``token`` is ``""`` for
    the first page, else the ``next_page_token`` of the previous page. Tokens are opaque; one
    that the datastore did not hand out raises :class:`~pyspire_sdk.errors.InvalidArgumentError`.
    """

    size: int = 0
    token: str = ""

    def __post_init__(self) -> None:
        if self.size < 0:
            raise InvalidArgumentError(f"page size {self.size} is negative")


@dataclass(frozen=True, slots=True)
class EntryPage:
    """One page of entries. ``next_page_token`` is ``""`` when no entries follow."""

    entries: tuple[RegistrationEntry, ...]
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class AttestedNodePage:
    """One page of attested nodes. ``next_page_token`` is ``""`` when no nodes follow."""

    nodes: tuple[AttestedNode, ...]
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class BundlePage:
    """One page of bundles. ``next_page_token`` is ``""`` when no bundles follow."""

    bundles: tuple[Bundle, ...]
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class FederationRelationshipPage:
    """One page of federation relationships. ``next_page_token`` is ``""`` when none follow."""

    relationships: tuple[FederationRelationship, ...]
    next_page_token: str = ""


class BundleDeleteMode(IntEnum):
    """What happens to entries that federate with a bundle being deleted (SPIRE's numbering)."""

    RESTRICT = 0
    """Refuse with :class:`FailedPreconditionError` while any entry federates with it."""
    DELETE = 1
    """Delete those entries too."""
    DISSOCIATE = 2
    """Remove the trust domain from those entries' ``federates_with``."""


class ChangeKind(StrEnum):
    """What kind of object a :class:`ChangeEvent` is about."""

    ENTRY = "entry"
    NODE = "node"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change to an entry or a node: a cache re-reads the object (absent means deleted).

    ``object_id`` is the entry id for ``ENTRY`` events and the node's SPIFFE ID (as a string) for
    ``NODE`` events. ``created_at`` is the host clock's time of the change.
    """

    event_id: int
    kind: ChangeKind
    object_id: str
    created_at: datetime


class ChangeSignal(StrEnum):
    """What a :class:`WatchableDataStore` tells its listener."""

    CHANGED = "changed"
    """Change events may have been appended, or a bundle written (through this server or
    another): read the feed, and the bundle."""
    RESYNC = "resync"
    """The watch was re-established after a gap in which signals may have been lost (a lost
    connection, a failed poll): rebuild what follows the feed from a full read."""


ChangeListener = Callable[[ChangeSignal], None]
"""Told of each :class:`ChangeSignal`; runs on the event loop and must return at once."""


@runtime_checkable
class DataStore(Plugin, Protocol):
    """The server's persistent state. See the module documentation for the shared contract."""

    # -- registration entries -------------------------------------------------------------

    async def create_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        """Store a new entry and return it as stored.

        The datastore assigns a random id when ``entry.id`` is empty, sets ``created_at`` from
        the host clock and ``revision_number`` to 0. Raises ``AlreadyExistsError`` when an entry
        with the same id, or with the same ``spiffe_id``, ``parent_id`` and selector set,
        exists; ``InvalidArgumentError`` when the entry has no selectors or a negative TTL;
        ``InvalidArgumentError`` when it federates with a trust domain that has no bundle.
        """
        ...

    async def create_entry_if_not_exists(
        self, entry: RegistrationEntry
    ) -> tuple[RegistrationEntry, bool]:
        """Like :meth:`create_entry`, but when an entry with the same ``spiffe_id``,
        ``parent_id`` and selector set exists, return ``(that entry, True)`` instead of raising.
        A new entry is returned as ``(entry, False)``."""
        ...

    async def create_entries(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[RegistrationEntry | PyspireError]:
        """Store many new entries in one transaction: per item, what :meth:`create_entry`
        returns or the error it raises (see *Batches* in the module documentation).

        An item that duplicates an earlier item of the same batch (same id, or same
        ``spiffe_id``, ``parent_id`` and selector set) gets ``AlreadyExistsError`` like a
        duplicate of a stored entry. Every created entry gets one ``ENTRY`` change event, in
        item order. An empty batch returns ``[]`` and writes nothing.
        """
        ...

    async def create_entries_if_not_exist(
        self, entries: Sequence[RegistrationEntry]
    ) -> list[tuple[RegistrationEntry, bool] | PyspireError]:
        """Like :meth:`create_entries`, but per item what :meth:`create_entry_if_not_exists`
        returns: ``(existing entry, True)`` for an item whose ``spiffe_id``, ``parent_id`` and
        selector set match a stored entry or an earlier item of the batch (no event is written
        for it), ``(new entry, False)`` for a created one."""
        ...

    async def get_entry(self, entry_id: str) -> RegistrationEntry | None:
        """The entry with this id, or ``None``."""
        ...

    async def list_entries(
        self, entry_filter: EntryFilter | None = None, page: Page | None = None
    ) -> EntryPage:
        """Entries matching ``entry_filter`` in a stable order (creation order), one page.

        Paging through with the returned tokens yields every matching entry exactly once,
        provided no entry is created or deleted meanwhile.
        """
        ...

    async def count_entries(self, entry_filter: EntryFilter | None = None) -> int:
        """How many entries match ``entry_filter``."""
        ...

    async def update_entry(
        self, entry: RegistrationEntry, mask: frozenset[str] | None = None
    ) -> RegistrationEntry:
        """Overwrite the fields named in ``mask`` (every field of :data:`ENTRY_MASK_FIELDS` when
        ``None``) of the entry with id ``entry.id``; return it as stored, with
        ``revision_number`` one higher. Raises ``NotFoundError`` when the entry is missing,
        ``AlreadyExistsError`` when the result would duplicate another entry,
        ``InvalidArgumentError`` for a mask field outside :data:`ENTRY_MASK_FIELDS` or an
        invalid result."""
        ...

    async def delete_entry(self, entry_id: str) -> RegistrationEntry:
        """Delete the entry and return it as it was; ``NotFoundError`` when missing."""
        ...

    async def update_entries(
        self, entries: Sequence[RegistrationEntry], mask: frozenset[str] | None = None
    ) -> list[RegistrationEntry | PyspireError]:
        """Update many entries in one transaction with the same ``mask``: per item, what
        :meth:`update_entry` returns or the error it raises. An entry named twice is updated
        twice, the second time on top of the first (its revision rises by two). Every updated
        entry gets one ``ENTRY`` change event, in item order. ``InvalidArgumentError`` is raised
        for the whole call (nothing written) when ``mask`` names a field outside
        :data:`ENTRY_MASK_FIELDS`."""
        ...

    async def delete_entries(
        self, entry_ids: Sequence[str]
    ) -> list[RegistrationEntry | PyspireError]:
        """Delete many entries in one transaction: per id, the entry as it was or
        ``NotFoundError`` (also for an id that an earlier item of the batch deleted). Every
        deleted entry gets one ``ENTRY`` change event, in item order."""
        ...

    async def prune_registration_entries(self, expires_before: datetime) -> int:
        """Delete entries whose ``expires_at`` is set and earlier than ``expires_before``;
        return how many were deleted. Each deletion writes a change event."""
        ...

    async def list_all_entries(self) -> list[RegistrationEntry]:
        """Every entry, in creation order, read in one consistent snapshot.

        Meant for caches that rebuild their index: it costs a handful of queries whatever the
        number of entries, and must stay fast for 100,000 entries.
        """
        ...

    # -- attested nodes ---------------------------------------------------------------------

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        """Store a new node; ``AlreadyExistsError`` when one with its SPIFFE ID exists.

        Non-empty ``node.selectors`` replace the node's selectors; empty ones leave selectors
        set earlier with :meth:`set_node_selectors` in place. Returns the node as stored, with
        its selectors.
        """
        ...

    async def get_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        """The node with its selectors, or ``None``."""
        ...

    async def list_attested_nodes(
        self, node_filter: NodeFilter | None = None, page: Page | None = None
    ) -> AttestedNodePage:
        """Nodes (with selectors) matching ``node_filter`` in a stable order, one page."""
        ...

    async def count_attested_nodes(self, node_filter: NodeFilter | None = None) -> int:
        """How many nodes match ``node_filter``."""
        ...

    async def update_attested_node(
        self, node: AttestedNode, mask: frozenset[str] | None = None
    ) -> AttestedNode:
        """Overwrite the fields named in ``mask`` (all of :data:`NODE_MASK_FIELDS` when
        ``None``) of the node with ID ``node.spiffe_id``; return it as stored. ``NotFoundError``
        when missing, ``InvalidArgumentError`` for an unknown mask field."""
        ...

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        """Delete the node and its selectors; return it as it was. ``NotFoundError`` when
        missing."""
        ...

    async def set_node_selectors(
        self, spiffe_id: SpiffeId, selectors: tuple[Selector, ...]
    ) -> None:
        """Replace the selectors of the node ``spiffe_id`` (the node record need not exist yet:
        attestation stores selectors before the node). Writes a ``NODE`` change event."""
        ...

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]:
        """The node's selectors in the order they were set; ``()`` when none are stored."""
        ...

    async def list_all_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        """Every node's selectors, for caches; nodes without selectors are absent."""
        ...

    # -- join tokens --------------------------------------------------------------------

    async def create_join_token(self, token: JoinToken) -> JoinToken:
        """Store a token; ``AlreadyExistsError`` when the same value exists,
        ``InvalidArgumentError`` when the value is empty."""
        ...

    async def fetch_join_token(self, token: str) -> JoinToken | None:
        """The token with this value, or ``None`` (expired tokens are returned too)."""
        ...

    async def delete_join_token(self, token: str) -> None:
        """Delete a token; ``NotFoundError`` when missing."""
        ...

    async def consume_join_token(self, token: str) -> JoinToken:
        """Delete the token and return it, in one transaction: of any number of concurrent
        calls with the same value exactly one succeeds, the others raise ``NotFoundError``.
        Expiry is not checked here; the caller decides what an expired token means."""
        ...

    async def prune_join_tokens(self, expires_before: datetime) -> int:
        """Delete tokens expiring before ``expires_before``; return how many."""
        ...

    # -- bundles ----------------------------------------------------------------------------

    async def create_bundle(self, bundle: Bundle) -> Bundle:
        """Store a bundle for a trust domain that has none; ``AlreadyExistsError`` otherwise."""
        ...

    async def get_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
        """The trust domain's bundle, or ``None``."""
        ...

    async def list_bundles(self, page: Page | None = None) -> BundlePage:
        """Bundles ordered by trust domain name, one page."""
        ...

    async def count_bundles(self) -> int:
        """How many bundles are stored."""
        ...

    async def set_bundle(self, bundle: Bundle) -> Bundle:
        """Create or replace the bundle of ``bundle.trust_domain`` exactly as given."""
        ...

    async def update_bundle(
        self, trust_domain: TrustDomain, mutate: Callable[[Bundle | None], Bundle]
    ) -> Bundle:
        """Read-modify-write in one transaction: call ``mutate`` with the current bundle (or
        ``None``) and store what it returns. No other write to the bundle can happen between the
        read and the write. An exception from ``mutate`` propagates and changes nothing.
        ``InvalidArgumentError`` when the result is for another trust domain. The sequence
        number is stored as ``mutate`` returns it."""
        ...

    async def append_bundle(self, bundle: Bundle) -> Bundle:
        """Add the X.509 authorities (compared by DER) and JWT authorities (compared by key ID)
        of ``bundle`` that the stored bundle lacks, raising the sequence number by one when
        something was added; create the bundle as given when none is stored. Returns the
        stored bundle."""
        ...

    async def delete_bundle(
        self, trust_domain: TrustDomain, mode: BundleDeleteMode = BundleDeleteMode.RESTRICT
    ) -> None:
        """Delete a bundle. Entries that federate with it are handled according to ``mode``
        (each entry deleted or changed writes a change event). ``NotFoundError`` when there is
        no bundle; ``FailedPreconditionError`` in RESTRICT mode while entries federate with it.
        """
        ...

    async def prune_bundle(self, trust_domain: TrustDomain, expires_before: datetime) -> bool:
        """Drop X.509 authorities whose certificate's notAfter, and JWT authorities whose
        ``expires_at``, is earlier than ``expires_before``; raise the sequence number by one
        when something was dropped. Returns whether the bundle changed (``False`` when there is
        no bundle). ``FailedPreconditionError`` when every authority of a bundle that has some
        would go: a bundle is never emptied by pruning."""
        ...

    # -- CA journal -------------------------------------------------------------------------

    async def get_ca_journal(self, name: str) -> bytes | None:
        """The CA manager's journal blob stored under ``name``, or ``None``."""
        ...

    async def set_ca_journal(self, name: str, data: bytes) -> None:
        """Store (create or replace) the journal blob under ``name``."""
        ...

    # -- federation relationships -------------------------------------------------------------

    async def create_federation_relationship(
        self, relationship: FederationRelationship
    ) -> FederationRelationship:
        """Store a relationship; ``AlreadyExistsError`` when its trust domain has one."""
        ...

    async def get_federation_relationship(
        self, trust_domain: TrustDomain
    ) -> FederationRelationship | None:
        """The relationship with ``trust_domain``, or ``None``."""
        ...

    async def list_federation_relationships(
        self, page: Page | None = None
    ) -> FederationRelationshipPage:
        """Relationships ordered by trust domain name, one page."""
        ...

    async def update_federation_relationship(
        self, relationship: FederationRelationship, mask: frozenset[str] | None = None
    ) -> FederationRelationship:
        """Overwrite the fields in ``mask`` (all of :data:`FEDERATION_RELATIONSHIP_MASK_FIELDS`
        when ``None``); ``NotFoundError`` when missing, ``InvalidArgumentError`` for an unknown
        mask field."""
        ...

    async def delete_federation_relationship(self, trust_domain: TrustDomain) -> None:
        """Delete the relationship; ``NotFoundError`` when missing. The trust domain's bundle is
        kept."""
        ...

    # -- change feed ------------------------------------------------------------------------

    async def list_change_events(
        self, after_event_id: int = 0, limit: int = 0
    ) -> list[ChangeEvent]:
        """Events with ids greater than ``after_event_id`` in increasing id order, at most
        ``limit`` of them (all when ``limit`` is 0)."""
        ...

    async def last_change_event_id(self) -> int:
        """The highest event id ever assigned (still so after pruning); 0 before any event."""
        ...

    async def prune_change_events(self, before: datetime) -> int:
        """Delete events created before ``before``; return how many."""
        ...


@runtime_checkable
class CopyableDataStore(Protocol):
    """What a datastore offers, beyond :class:`DataStore`, to be copied to or from another one
    (``pyspire-server datastore copy``). Optional: a datastore without it runs a server all
    the same, and the copy command refuses it by name."""

    async def list_join_tokens(self) -> list[JoinToken]:
        """Every stored join token, expired ones included, ordered by value."""
        ...

    async def restore_entries(self, entries: Sequence[RegistrationEntry]) -> None:
        """Store entries exactly as given, ``id``, ``created_at`` and ``revision_number``
        included, replacing any stored entry with the same id, in one transaction; each
        written entry gets an ``ENTRY`` change event. Raises (writing nothing) what
        :meth:`DataStore.create_entries` reports for an invalid item, or
        ``InvalidArgumentError`` for an item without an id or ``created_at``."""
        ...


@runtime_checkable
class WatchableDataStore(Protocol):
    """What a datastore offers, beyond :class:`DataStore`, so that a change written through one
    server reaches the caches of the other servers sharing the storage in well under a second,
    instead of at their next poll of the change feed. Optional: without it, servers still see
    every change, only later.

    The signal is a hint, the change feed stays the truth: a server that hears
    :attr:`ChangeSignal.CHANGED` reads :meth:`DataStore.list_change_events` after the last id
    it applied, so signals may be coalesced, repeated or spurious without harm. Two ways to
    implement it:

    - **Pushed** (PostgreSQL): every transaction that appends events or writes a bundle also
      sends a notification (``NOTIFY`` with the schema); the watch holds one connection of its
      own that listens and turns each notification about this datastore into ``CHANGED``.
    - **Polled** (MySQL, or any database without notifications): the watch reads
      :meth:`DataStore.last_change_event_id` and the bundles' sequence numbers every poll
      interval (a setting of the plugin, under a second to meet the same latency) and signals
      ``CHANGED`` when either changed. A couple of indexed queries per interval per server.

    Bundles matter because each server trusts agents by the shared bundle: when a server
    publishes a new CA (at its first start, or when it prepares the next one), the others must
    trust the agent SVIDs it signs before those agents call them.
    """

    async def watch_changes(self, listener: ChangeListener) -> None:
        """Call ``listener`` whenever change events may have been appended or a bundle written,
        until cancelled.

        Contract:

        - ``listener(CHANGED)`` after every commit that appended change events or wrote a
          bundle, by whichever server; and once when the watch is established, so a change
          made between the caller's last read and the start of the watch is not missed.
        - When the watch breaks (the connection is lost, a poll fails), it retries by
          :mod:`pyspire_sdk.backoff` (logging the state change once, never a secret), and once
          re-established calls ``listener(RESYNC)``: events may have been appended and pruned
          meanwhile, so the caller reloads in full.
        - A notification is delivered within a few milliseconds of the commit that caused it
          (pushed), or within one poll interval (polled).
        - It never returns and never raises for a storage failure; cancelling the caller ends
          it and releases what it holds (the listening connection).
        """
        ...


@hookspec
def pyspire_datastores() -> list[PluginRegistration[object, DataStore]]:  # type: ignore[empty-body]
    """Return the datastores this distribution provides.

    Called once at start; must not do I/O. Each registration's factory builds an unconfigured
    object implementing :class:`DataStore`; the kernel calls its ``configure(config, host)``
    with the validated configuration and :class:`~pyspire_sdk.plugin.HostServices` (whose
    ``clock`` stamps ``created_at`` fields and whose ``data_dir`` is the default place for local
    files). A server runs exactly one datastore. Return ``[]`` to offer none.
    """
