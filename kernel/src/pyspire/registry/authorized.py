"""The authorized-entries index: which registration entries each agent may hold.

An agent is authorized for (SPIRE's ``pkg/server/authorizedentries``):

1. every entry whose ``parent_id`` is the agent's ID;
2. every entry whose ``parent_id`` is the ``spiffe_id`` of a node alias (an entry parented by the
   server ID) all of whose selectors are among the agent's node selectors;
3. recursively, every entry whose ``parent_id`` is the ``spiffe_id`` of an entry already found.

Node alias entries themselves are not returned: they name a group of nodes, not an identity the
agent mints. The walk keeps a set of visited parent IDs, so cycles (``A → B → A``) and IDs shared
by several entries are followed once. An entry that has expired at the ``now`` passed in is left
out and not walked through: an identity nobody can hold any more cannot parent another.

The index lives in memory and is plain Python: no I/O, no clock, no locks (it is used from one
event loop, and every method runs to completion without awaiting). It answers a lookup by
following dictionaries, never by scanning all entries or all aliases:

- entries are grouped by parent ID, so a lookup touches only the entries it returns;
- each node alias is filed under exactly one of its selectors (the one with the fewest aliases
  filed under it when the alias arrives), so matching a node's selectors looks only at aliases
  that share a selector with the node and checks each candidate's full set once.

Entries are stored with the values they repeat shared (:mod:`pyspire.registry.shared`: one
parent ID object for all children of a parent, one object per selector and trust domain), so
the index's memory grows with what is distinct. Lookups return tuples of the stored (immutable)
entries themselves; nothing is copied. :attr:`revision`
increases on every change, so a caller can tell whether an answer it holds may be stale.
"""

from __future__ import annotations

__all__ = ["AuthorizedEntriesIndex", "IndexStats"]

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from pyspire.registry.shared import SharedValues
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain, server_id

# A child of some parent: the entry and the string key of its SPIFFE ID (the key its own
# children are filed under). Tuples index faster than attribute lookups on the hot path.
_Child = tuple[RegistrationEntry, str]


@dataclass(frozen=True, slots=True)
class _Alias:
    """A node alias as the matcher sees it."""

    entry_id: str
    key: str
    selectors: frozenset[Selector]
    pivot: Selector


@dataclass(frozen=True, slots=True)
class IndexStats:
    """Sizes of the index, for metrics and debugging."""

    entries: int
    aliases: int
    parents: int
    nodes: int
    revision: int


def _key(spiffe_id: SpiffeId) -> str:
    return str(spiffe_id)


def _alias_order(alias: _Alias) -> tuple[str, str]:
    return (alias.key, alias.entry_id)


class AuthorizedEntriesIndex:
    """Entries, node aliases and node selectors of one trust domain, indexed for agent lookups.

    ``trust_domain`` decides which entries are node aliases (parent ``spiffe://<td>/spire/server``).
    Entries are expected to have passed :func:`~pyspire.registry.validation.validate_entry`; the
    index does not re-check them, but an unexpected entry only ever affects its own subtree.
    """

    def __init__(self, trust_domain: TrustDomain) -> None:
        self._trust_domain = trust_domain
        self._alias_parent = server_id(trust_domain)
        self._entries: dict[str, RegistrationEntry] = {}
        # entry id -> parent key, for entries filed under a parent (everything but aliases).
        self._parent_of: dict[str, str] = {}
        # parent key -> {entry id: (entry, spiffe key)}; insertion ordered.
        self._children: dict[str, dict[str, _Child]] = {}
        self._aliases: dict[str, _Alias] = {}
        self._aliases_by_pivot: dict[Selector, dict[str, _Alias]] = {}
        self._node_selectors: dict[SpiffeId, frozenset[Selector]] = {}
        self._shared = SharedValues()
        self._revision = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def trust_domain(self) -> TrustDomain:
        """The trust domain whose server ID marks node aliases."""
        return self._trust_domain

    @property
    def revision(self) -> int:
        """A counter raised by every change to entries or node selectors (never lowered)."""
        return self._revision

    @property
    def entries_by_id(self) -> Mapping[str, RegistrationEntry]:
        """Every entry (node aliases included) by id: a live, read-only view."""
        return MappingProxyType(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get_entry(self, entry_id: str) -> RegistrationEntry | None:
        """The entry with this id, or ``None``."""
        return self._entries.get(entry_id)

    def node_selectors(self, agent_id: SpiffeId) -> frozenset[Selector]:
        """The node selectors known for ``agent_id`` (empty when none are known)."""
        return self._node_selectors.get(agent_id, frozenset())

    def stats(self) -> IndexStats:
        """How much the index holds now."""
        return IndexStats(
            entries=len(self._entries),
            aliases=len(self._aliases),
            parents=len(self._children),
            nodes=len(self._node_selectors),
            revision=self._revision,
        )

    def matching_aliases(self, selectors: Iterable[Selector]) -> tuple[RegistrationEntry, ...]:
        """The node alias entries all of whose selectors are among ``selectors``."""
        have = selectors if isinstance(selectors, frozenset) else frozenset(selectors)
        return tuple(self._entries[alias.entry_id] for alias in self._matching_aliases(have))

    def authorized_entries(
        self, agent_id: SpiffeId, now: datetime | None = None
    ) -> tuple[RegistrationEntry, ...]:
        """The entries ``agent_id`` may hold, each once, in a stable order.

        The order is a depth-first preorder (each entry is followed by its descendants), first
        from the agent's own ID and then from each matching node alias in order of the alias's
        SPIFFE ID; siblings keep the order they were added in. With ``now``, entries whose
        ``expires_at`` is earlier than ``now`` are left out together with the descendants
        reached only through them.
        """
        starts = [_key(agent_id)]
        node_selectors = self._node_selectors.get(agent_id)
        if node_selectors:
            starts.extend(alias.key for alias in self._matching_aliases(node_selectors))
        return self._walk(starts, now)

    def _matching_aliases(self, have: frozenset[Selector]) -> list[_Alias]:
        found: list[_Alias] = []
        by_pivot = self._aliases_by_pivot
        for selector in have:
            candidates = by_pivot.get(selector)
            if candidates:
                found.extend(alias for alias in candidates.values() if alias.selectors <= have)
        # Set iteration order varies between processes; answers must not.
        found.sort(key=_alias_order)
        return found

    def _walk(self, starts: list[str], now: datetime | None) -> tuple[RegistrationEntry, ...]:
        children = self._children
        seen: set[str] = set()
        found: list[RegistrationEntry] = []
        # A stack of iterators over children lists gives a depth-first, preorder walk without
        # recursion (so a chain of any depth cannot overflow the interpreter stack).
        for start in starts:
            if start in seen:
                continue
            seen.add(start)
            first = children.get(start)
            if not first:
                continue
            stack = [iter(first.values())]
            while stack:
                for entry, key in stack[-1]:
                    if now is not None:
                        expires_at = entry.expires_at
                        if expires_at is not None and expires_at < now:
                            continue
                    found.append(entry)
                    if key not in seen:
                        seen.add(key)
                        below = children.get(key)
                        if below:
                            stack.append(iter(below.values()))
                            break
                else:
                    stack.pop()
        return tuple(found)

    # -- writing ---------------------------------------------------------------------------

    def load(
        self,
        entries: Iterable[RegistrationEntry],
        node_selectors: Mapping[SpiffeId, Iterable[Selector]],
    ) -> None:
        """Replace everything with ``entries`` and ``node_selectors`` (a full rebuild).

        A later entry with the id of an earlier one replaces it.
        """
        self._entries = {}
        self._parent_of = {}
        self._children = {}
        self._aliases = {}
        self._aliases_by_pivot = {}
        self._node_selectors = {}
        self._shared = SharedValues()
        insert = self._insert
        entries_by_id = self._entries
        for entry in entries:
            if entry.id in entries_by_id:
                self._remove(entry.id)
            insert(entry)
        for agent_id, selectors in node_selectors.items():
            frozen = frozenset(selectors)
            if frozen:
                self._node_selectors[agent_id] = frozen
        self._revision += 1

    def upsert_entry(self, entry: RegistrationEntry) -> bool:
        """Add ``entry``, or replace the entry with its id; return whether anything changed.

        Re-parenting, turning an entry into a node alias (or back) and changing an alias's
        selectors all take effect for the next lookup.
        """
        current = self._entries.get(entry.id)
        if current is not None:
            if current == entry:
                return False
            self._remove(entry.id)
        self._insert(entry)
        self._revision += 1
        return True

    def remove_entry(self, entry_id: str) -> RegistrationEntry | None:
        """Remove the entry with ``entry_id``; return it, or ``None`` when it was not held."""
        removed = self._remove(entry_id)
        if removed is not None:
            self._revision += 1
        return removed

    def set_node_selectors(self, agent_id: SpiffeId, selectors: Iterable[Selector]) -> bool:
        """Record the node selectors of ``agent_id`` (none forgets them); return whether they
        changed."""
        frozen = frozenset(selectors)
        if self._node_selectors.get(agent_id, frozenset()) == frozen:
            return False
        if frozen:
            self._node_selectors[agent_id] = frozen
        else:
            del self._node_selectors[agent_id]
        self._revision += 1
        return True

    def remove_node(self, agent_id: SpiffeId) -> bool:
        """Forget the node selectors of ``agent_id``; return whether any were known.

        Entries parented directly by the agent stay: they belong to the registry, not the node.
        """
        return self.set_node_selectors(agent_id, ())

    def _insert(self, entry: RegistrationEntry) -> None:
        self._shared.share(entry)
        entry_id = entry.id
        self._entries[entry_id] = entry
        if entry.parent_id == self._alias_parent:
            self._insert_alias(entry)
            return
        parent_key = sys.intern(_key(entry.parent_id))
        self._parent_of[entry_id] = parent_key
        siblings = self._children.get(parent_key)
        if siblings is None:
            siblings = self._children[parent_key] = {}
        siblings[entry_id] = (entry, _key(entry.spiffe_id))

    def _insert_alias(self, entry: RegistrationEntry) -> None:
        selectors = frozenset(entry.selectors)
        if not selectors:
            # An alias without selectors would match every node; SPIRE never matches it, and
            # validation never lets one in.
            return
        by_pivot = self._aliases_by_pivot
        pivot = min(selectors, key=lambda selector: (len(by_pivot.get(selector, ())), selector))
        alias = _Alias(entry.id, _key(entry.spiffe_id), selectors, pivot)
        self._aliases[entry.id] = alias
        filed = by_pivot.get(pivot)
        if filed is None:
            filed = by_pivot[pivot] = {}
        filed[entry.id] = alias

    def _remove(self, entry_id: str) -> RegistrationEntry | None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return None
        parent_key = self._parent_of.pop(entry_id, None)
        if parent_key is not None:
            siblings = self._children[parent_key]
            del siblings[entry_id]
            if not siblings:
                del self._children[parent_key]
        alias = self._aliases.pop(entry_id, None)
        if alias is not None:
            filed = self._aliases_by_pivot[alias.pivot]
            del filed[entry_id]
            if not filed:
                del self._aliases_by_pivot[alias.pivot]
        return entry
