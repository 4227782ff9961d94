"""The SVIDs the agent keeps for SVID stores: those of entries marked ``store_svid``.

Such an entry is never served over the Workload API (the workload cache leaves it out). The sync
manager mints its X509-SVID like any other, on the same renewal rules
(:meth:`StoredSvidCache.stale_entries`; after a taint, each at its own moment of the spread of
:mod:`pyspire.agent.tainted`), and the SVID, with its private key, our bundle and the
bundles of the trust domains the entry federates with, goes to the SVID store plugin the entry's
selectors name (:mod:`pyspire.agent.svid_stores` delivers it).

**Addressing** (SPIRE's rule). Every selector of a stored entry has the same type, the name of a
configured SVID store; their values are the metadata telling that store where to keep the SVID
(``aws_secretsmanager:secretname:web``): together, a :class:`StoreTarget`. An entry without
selectors, with selectors of several types, or whose type names no configured store is logged
as an error (once per entry revision) and gets no SVID. When two entries address the same
target, the older one has it and the other is logged.

**Reconciliation.** The cache knows what each target should hold (the current SVID of the entry
addressing it) and what it holds as far as the agent knows (what was last put there). The
difference is the work still to do (:meth:`StoredSvidCache.pending`): a put for a target whose
SVID, key or bundles changed (a rotation, a new entry, a bundle update; an SVID minted for an
older revision of its entry waits for its successor), a delete for a target
no entry addresses any more (the entry was deleted, or its selectors changed). A delivery that
fails stays pending, so it is retried until it succeeds. Targets delivered by an earlier run of
the agent can be handed in at start, so that entries deleted meanwhile are removed from their
stores after the first sync. Nothing is deleted before the entries are known, and expired SVIDs
are not put.

Everything here is in memory and synchronous; waiting and plugin calls belong to the delivery.
"""

from __future__ import annotations

__all__ = [
    "DeleteSvid",
    "PutSvid",
    "StoreOperation",
    "StoreTarget",
    "StoredSvidCache",
    "store_target",
]

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from pyspire.agent.cache import IssuedSvid, StaleEntry, authority_index, stale_reason
from pyspire.agent.identities import entry_age
from pyspire.agent.tainted import TaintSchedule
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.svid_store import StoredSvid, store_metadata
from pyspire_sdk.spiffeid import TrustDomain

_log = structlog.get_logger("pyspire.agent.stored_svids")


@dataclass(frozen=True, slots=True, order=True)
class StoreTarget:
    """Where one stored SVID lives: the SVID store plugin's name and the metadata it is given."""

    store: str
    metadata: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.store}:{','.join(self.metadata)}"


@dataclass(frozen=True, slots=True)
class PutSvid:
    """Put ``svid`` (the current SVID of entry ``entry_id``) at ``target``."""

    target: StoreTarget
    entry_id: str
    svid: StoredSvid


@dataclass(frozen=True, slots=True)
class DeleteSvid:
    """Remove whatever the agent stored at ``target``."""

    target: StoreTarget


StoreOperation = PutSvid | DeleteSvid


def store_target(entry: RegistrationEntry, stores: Collection[str]) -> StoreTarget:
    """Where ``entry``'s SVID is to be stored, by SPIRE's rule (see the module documentation).

    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` naming the problem.
    """
    types = sorted({selector.type for selector in entry.selectors})
    if not types:
        raise InvalidArgumentError(
            "selectors: an entry with store_svid needs selectors naming its svid store, found none"
        )
    if len(types) > 1:
        raise InvalidArgumentError(
            "selectors: the selectors of an entry with store_svid all have one type, the name "
            f"of its svid store; found {', '.join(types)}"
        )
    name = types[0]
    if name not in stores:
        configured = ", ".join(sorted(stores)) or "none"
        raise InvalidArgumentError(
            f"selectors: no svid store named {name!r} is configured (configured: {configured})"
        )
    return StoreTarget(name, store_metadata(name, entry.selectors))


class StoredSvidCache:
    """Stored entries, their X509-SVIDs and what each SVID store holds; see the module
    documentation for the rules.

    ``stores`` are the names of the configured SVID stores; ``delivered`` the targets an earlier
    run left in them (their content unknown). Targets of stores no longer configured are
    forgotten with a warning: nothing could remove them.
    """

    def __init__(
        self,
        stores: Collection[str],
        clock: Clock,
        *,
        delivered: Iterable[StoreTarget] = (),
    ) -> None:
        self._stores = frozenset(stores)
        self._clock = clock
        self._known = False
        self._entries: dict[str, RegistrationEntry] = {}
        self._targets: dict[str, StoreTarget] = {}
        self._held: dict[str, IssuedSvid] = {}
        self._bundle: Bundle | None = None
        self._federated: dict[TrustDomain, Bundle] = {}
        self._authorities: dict[bytes, bool] = {}
        self._taints = TaintSchedule()
        self._delivered: dict[StoreTarget, StoredSvid | None] = {}
        self._refused: dict[StoreTarget, StoredSvid] = {}
        self._complaints: dict[str, tuple[int, str]] = {}
        self._built: dict[str, StoredSvid | None] = {}
        self._wakeups: list[asyncio.Event] = []
        for target in delivered:
            if target.store in self._stores:
                self._delivered[target] = None
            else:
                _log.warning(
                    "an svid stored by an earlier run is in a store no longer configured; "
                    "it is not removed",
                    store=target.store,
                    metadata=list(target.metadata),
                )

    # -- what the sync manager uses ----------------------------------------------------------

    def update(
        self,
        entries: Sequence[RegistrationEntry],
        bundle: Bundle,
        federated_bundles: Mapping[TrustDomain, Bundle],
    ) -> None:
        """Take the authorized entries (those marked ``store_svid``) and the bundles the server
        just sent. SVIDs of entries that are gone are dropped; their targets become deletes."""
        incoming = {entry.id: entry for entry in entries if entry.store_svid}
        changed = not self._known
        self._known = True
        if incoming != self._entries:
            changed = True
            for entry_id in self._entries.keys() - incoming.keys():
                self._held.pop(entry_id, None)
                self._complaints.pop(entry_id, None)
            self._entries = incoming
            self._targets = self._resolve_targets()
        if bundle != self._bundle:
            self._bundle = bundle
            self._authorities = authority_index(bundle)
            self._taints.observe(self._authorities, self._clock.now())
            changed = True
        federated = dict(federated_bundles)
        if federated != self._federated:
            self._federated = federated
            changed = True
        if changed:
            self._changed()

    def stale_entries(self, now: datetime) -> list[StaleEntry]:
        """Entries addressing a target whose SVID is missing or due for renewal, oldest first."""
        stale: list[StaleEntry] = []
        for entry in sorted(self._entries.values(), key=entry_age):
            if entry.id not in self._targets:
                continue
            held = self._held.get(entry.id)
            reason = stale_reason(entry, held, now, self._authorities, self._taints)
            if reason is not None:
                stale.append(StaleEntry(entry, reason))
        return stale

    def store(self, issued: Sequence[IssuedSvid]) -> int:
        """Keep the newly issued SVIDs of stored entries (others are ignored); how many."""
        kept = 0
        for item in issued:
            if item.entry_id in self._targets:
                self._held[item.entry_id] = item
                kept += 1
        if kept:
            self._changed()
        return kept

    # -- what the delivery uses --------------------------------------------------------------

    @property
    def svid_count(self) -> int:
        """How many X509-SVIDs of stored entries are held now."""
        return len(self._held)

    def subscribe(self) -> asyncio.Event:
        """An event set whenever the pending work may have changed; the caller clears it."""
        wakeup = asyncio.Event()
        self._wakeups.append(wakeup)
        return wakeup

    def unsubscribe(self, wakeup: asyncio.Event) -> None:
        """Stop setting an event :meth:`subscribe` returned."""
        if wakeup in self._wakeups:
            self._wakeups.remove(wakeup)

    def pending(self, store: str | None = None) -> list[StoreOperation]:
        """What the stores (or the one named ``store``) lack: deletes first, then puts, each in
        target order. A put the store refused as invalid is not offered again until the SVID
        or its target changes."""
        if not self._known:
            return []
        claimed = {target: entry_id for entry_id, target in self._targets.items()}
        operations: list[StoreOperation] = [
            DeleteSvid(target)
            for target in sorted(self._delivered)
            if target not in claimed and (store is None or target.store == store)
        ]
        now = self._clock.now()
        for target, entry_id in sorted(claimed.items()):
            if store is not None and target.store != store:
                continue
            issued = self._held.get(entry_id)
            if (
                issued is None
                or issued.entry_revision != self._entries[entry_id].revision_number
                or now >= issued.not_after
            ):
                continue
            svid = self._stored_svid(entry_id, issued, target)
            if svid is None:
                continue
            if target in self._delivered and self._delivered[target] == svid:
                continue
            if self._refused.get(target) == svid:
                continue
            operations.append(PutSvid(target, entry_id, svid))
        return operations

    def putting(self, operation: PutSvid) -> None:
        """Record that ``operation`` is about to be tried: its target may hold an SVID from now
        on, even when the agent stops before the store answers (the plugin may have written
        it already), so a restart still knows to delete it once its entry is gone."""
        self._delivered.setdefault(operation.target, None)

    def delivered(self, operation: StoreOperation) -> None:
        """Record that ``operation`` succeeded (a delete of nothing stored counts)."""
        if isinstance(operation, PutSvid):
            self._delivered[operation.target] = operation.svid
            self._refused.pop(operation.target, None)
        else:
            self._delivered.pop(operation.target, None)

    def refused(self, operation: PutSvid) -> None:
        """Record that the store refused ``operation`` as invalid: not retried until its SVID
        changes (a rotation, a new bundle) or the entry addresses another target."""
        self._refused[operation.target] = operation.svid

    def delivered_targets(self) -> tuple[StoreTarget, ...]:
        """The targets that hold (or may hold) an SVID put by this agent, in order."""
        return tuple(sorted(self._delivered))

    # -- internals ---------------------------------------------------------------------------

    def _changed(self) -> None:
        self._built.clear()
        for wakeup in self._wakeups:
            wakeup.set()

    def _resolve_targets(self) -> dict[str, StoreTarget]:
        targets: dict[str, StoreTarget] = {}
        owners: dict[StoreTarget, RegistrationEntry] = {}
        for entry in sorted(self._entries.values(), key=entry_age):
            try:
                target = store_target(entry, self._stores)
            except InvalidArgumentError as error:
                self._complain(entry, str(error))
                continue
            owner = owners.get(target)
            if owner is not None:
                self._complain(
                    entry,
                    f"selectors: svid store target {target} is already used by entry {owner.id}",
                )
                continue
            owners[target] = entry
            targets[entry.id] = target
            self._complaints.pop(entry.id, None)
        for entry_id in self._held.keys() - targets.keys():
            del self._held[entry_id]
        return targets

    def _complain(self, entry: RegistrationEntry, problem: str) -> None:
        """Log an unusable stored entry once per revision and problem."""
        complaint = (entry.revision_number, problem)
        if self._complaints.get(entry.id) == complaint:
            return
        self._complaints[entry.id] = complaint
        _log.error(
            "entry with store_svid cannot be stored; it gets no svid",
            entry_id=entry.id,
            spiffe_id=str(entry.spiffe_id),
            reason=problem,
        )

    def _stored_svid(
        self, entry_id: str, issued: IssuedSvid, target: StoreTarget
    ) -> StoredSvid | None:
        """What the store is given for ``entry_id``, built once per change of the cache."""
        if entry_id in self._built:
            return self._built[entry_id]
        built = self._build(self._entries[entry_id], issued, target)
        self._built[entry_id] = built
        return built

    def _build(
        self, entry: RegistrationEntry, issued: IssuedSvid, target: StoreTarget
    ) -> StoredSvid | None:
        bundle = self._bundle
        if bundle is None or issued.svid.private_key is None:
            return None
        federated: dict[TrustDomain, tuple[bytes, ...]] = {}
        for trust_domain in entry.federates_with:
            found = self._federated.get(trust_domain)
            if trust_domain == bundle.trust_domain or found is None:
                continue
            roots = tuple(authority.der for authority in found.x509_authorities)
            if roots:
                federated[trust_domain] = roots
        try:
            return StoredSvid(
                spiffe_id=entry.spiffe_id,
                cert_chain=issued.svid.cert_chain,
                private_key=issued.svid.private_key,
                bundle=tuple(authority.der for authority in bundle.x509_authorities),
                expires_at=issued.not_after,
                metadata=target.metadata,
                federated_bundles=federated,
            )
        except InvalidArgumentError as error:
            self._complain(entry, f"svid cannot be stored: {error}")
            return None
