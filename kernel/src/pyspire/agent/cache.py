"""The agent's workload cache: entries, their X509-SVIDs, our bundle and federated bundles.

The sync manager (:mod:`pyspire.agent.sync`) fills it; the Workload API reads it through
:class:`~pyspire.agent.identities.IdentitySource`. Everything here is in memory and synchronous
except the waiting in :meth:`WorkloadCache.watch` and :meth:`WorkloadCache.run` and the JWT
mint, so a Workload API call never waits on the server for an SVID the cache holds.

**Expiry.** An X509-SVID is never handed out after its notAfter: it is dropped from the cache
at that moment (by :meth:`WorkloadCache.run`, and by :meth:`WorkloadCache.snapshot` should that
run late), and watchers see the change. It is renewed long before (at half-life); it expires
only when the server could not be reached for half its lifetime.

**Demand.** The Workload API opens :meth:`WorkloadCache.demand` for every X509-SVID stream.
An entry the caller is entitled to but that holds no SVID is then minted at once: demand
listeners (the sync manager) are told, and mint the missing SVIDs in one batch without waiting
for the next sync.

**Size bound** (``x509_svid_cache_max_size``, SPIRE's LRU rule). The bound is soft:

1. An entry that a workload wants (it matches the selectors of an open demand, or of one that
   found it without an SVID) always gets one, even beyond the bound: an identity is never
   refused for lack of room.
2. Entries that already hold an SVID keep having it renewed.
3. The remaining room, if any, is filled by pre-minting SVIDs for the other entries, oldest entry
   first (by creation time, then ID), so the choice is stable from one sync to the next.
4. When more SVIDs are held than the bound allows, each sync drops SVIDs, least recently used
   first (entries never used go first, newest entry first), until the count is back within the
   bound. Never dropped: SVIDs of entries with an open demand, and SVIDs used within
   :data:`IDLE_BEFORE_EVICTION` (SPIRE's cache expiry period), so the SVIDs of a workload that
   fetches now and then are not evicted and minted again in turn.

So an agent with fewer entries than the bound holds an SVID for every entry at all times, and an
agent with many more entries than active workloads holds SVIDs for the active ones plus a stable
set of pre-minted ones, and mints others on demand.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_X509_SVID_CACHE_MAX_SIZE",
    "IDLE_BEFORE_EVICTION",
    "CacheContents",
    "IssuedSvid",
    "StaleEntry",
    "StaleReason",
    "WorkloadCache",
    "authority_index",
    "stale_reason",
]

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from pyspire.agent.identities import (
    MATCH_MEMO_SIZE,
    Identity,
    Snapshot,
    entitled,
    entry_age,
)
from pyspire.agent.jwt_cache import DEFAULT_JWT_SVID_CACHE_MAX_SIZE, JwtSvidCache
from pyspire.agent.server_api import AgentServerApi
from pyspire.agent.tainted import TaintSchedule
from pyspire.der import read_tlv
from pyspire.waiting import sleep_or_wake
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import JwtSvid, RegistrationEntry, X509Svid
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import TrustDomain

DEFAULT_X509_SVID_CACHE_MAX_SIZE = 1000
"""SPIRE's default ``x509_svid_cache_max_size``."""

IDLE_BEFORE_EVICTION = timedelta(hours=1)
"""An SVID used more recently than this is not evicted over the size bound (SPIRE's
``SVIDCacheExpiryPeriod``)."""

_log = structlog.get_logger("pyspire.agent.cache")
_EPOCH = datetime.min.replace(tzinfo=UTC)


class StaleReason(StrEnum):
    """Why an entry needs a new X509-SVID."""

    MISSING = "no svid"
    ENTRY_CHANGED = "entry revision changed"
    HALF_LIFE = "past half-life"
    EXPIRED = "expired"
    ISSUER_UNTRUSTED = "issuer not in bundle"
    ISSUER_TAINTED = "issuer tainted"


@dataclass(frozen=True, slots=True)
class StaleEntry:
    """An entry the sync manager must get a new X509-SVID for, and why."""

    entry: RegistrationEntry
    reason: StaleReason


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    """An X509-SVID just issued for an entry, with what the cache needs to schedule renewal.

    Build it with :meth:`inspect`, which parses and checks the certificate once (it is meant to
    run in a worker thread), so the cache never parses certificates on the event loop.
    """

    entry_id: str
    entry_revision: int
    svid: X509Svid
    not_before: datetime
    not_after: datetime
    issuer_ids: frozenset[bytes]
    """How the authority that signed the top of the chain is recognised in a bundle."""

    @classmethod
    def inspect(
        cls, entry: RegistrationEntry, svid: X509Svid, *, public_key_info: bytes | None = None
    ) -> IssuedSvid:
        """Check that ``svid`` is a usable X509-SVID for ``entry`` and record its facts.

        Raises :class:`InvalidArgumentError` when the chain is empty or does not parse, the leaf
        names another SPIFFE ID, or the private key is missing or does not match the leaf.

        ``public_key_info`` is the SubjectPublicKeyInfo DER of ``svid.private_key``'s public
        key, from a caller that made the key and still knows it (the sync manager): the private
        key is then not decoded again. Each certificate is parsed once, and the leaf's key is
        compared as the bytes it carries, decoded only when those differ from ours (another
        encoding of the same key).
        """
        if not svid.cert_chain:
            raise InvalidArgumentError("x509 svid cert_chain is empty")
        if svid.private_key is None:
            raise InvalidArgumentError("x509 svid private_key is missing")
        try:
            chain = [x509.load_der_x509_certificate(der) for der in svid.cert_chain]
            leaf_key_info = _public_key_info(svid.cert_chain[0])
            uris, authority_key_id = _names_and_authority(chain[0], chain[-1])
        except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
            raise InvalidArgumentError(
                "x509 svid cert_chain holds an invalid certificate"
            ) from None
        leaf = chain[0]
        if uris != [str(entry.spiffe_id)]:
            raise InvalidArgumentError(
                f"x509 svid leaf names {uris!r}, expected [{str(entry.spiffe_id)!r}]"
            )
        if public_key_info is None:
            try:
                private_key = serialization.load_der_private_key(svid.private_key, password=None)
            except (ValueError, TypeError):
                raise InvalidArgumentError("x509 svid private_key is not a PKCS#8 key") from None
            public_key_info = _spki(private_key.public_key())
        if not _certifies(leaf, leaf_key_info, public_key_info):
            raise InvalidArgumentError("x509 svid leaf does not certify the private key")
        return cls(
            entry_id=entry.id,
            entry_revision=entry.revision_number,
            svid=svid,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            issuer_ids=_issuer_ids(svid.cert_chain, chain[-1], authority_key_id),
        )

    def half_life(self) -> datetime:
        """When half of the leaf's lifetime has passed: the SVID is renewed from then on."""
        return self.not_before + (self.not_after - self.not_before) / 2


@dataclass(frozen=True, slots=True)
class CacheContents:
    """What the cache holds that is worth keeping across a restart: the authorized entries
    (oldest first), their X509-SVIDs (with the entry revision each was minted for) and the
    bundles."""

    entries: tuple[RegistrationEntry, ...]
    issued: tuple[IssuedSvid, ...]
    bundle: Bundle | None
    federated_bundles: Mapping[TrustDomain, Bundle]


class WorkloadCache:
    """What the agent can hand to workloads, kept current by the sync manager.

    Implements :class:`~pyspire.agent.identities.IdentitySource`. Guarantees: a snapshot is
    immutable and its revision increases on every change a workload could see (an SVID issued,
    expired or dropped, an entry that holds an SVID changed, a bundle changed, the server lost
    or regained); only entries holding an unexpired SVID appear as identities; entries marked
    ``store_svid`` are never held, whoever hands them in; see the module documentation for
    expiry, demand and the size bound.
    """

    def __init__(
        self,
        api: AgentServerApi,
        clock: Clock,
        *,
        x509_svid_cache_max_size: int = DEFAULT_X509_SVID_CACHE_MAX_SIZE,
        jwt_svid_cache_max_size: int = DEFAULT_JWT_SVID_CACHE_MAX_SIZE,
    ) -> None:
        if x509_svid_cache_max_size < 1:
            raise InvalidArgumentError(
                f"x509_svid_cache_max_size must be at least 1, found {x509_svid_cache_max_size}"
            )
        self._api = api
        self._clock = clock
        self._max_size = x509_svid_cache_max_size
        self._jwt = JwtSvidCache(clock, max_size=jwt_svid_cache_max_size)
        self._entries: dict[str, RegistrationEntry] = {}
        self._order: list[str] = []
        self._held: dict[str, IssuedSvid] = {}
        self._bundle: Bundle | None = None
        self._federated: dict[TrustDomain, Bundle] = {}
        self._authorities: dict[bytes, bool] = {}
        self._taints = TaintSchedule()
        self._synced = False
        self._server_away = False
        self._revision = 0
        self._snapshot: Snapshot | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._last_access: dict[str, datetime] = {}
        self._subscriptions: Counter[frozenset[Selector]] = Counter()
        self._requested: set[str] = set()
        self._demand_listeners: list[Callable[[], None]] = []
        self._matches: dict[frozenset[Selector], list[str]] = {}
        self._next_expiry: datetime | None = None
        self._expiry_moved = asyncio.Event()

    # -- IdentitySource ----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current state; built once per revision, so repeated calls cost nothing."""
        if self._next_expiry is not None and self._clock.now() >= self._next_expiry:
            self._drop_expired()
        if self._snapshot is None:
            identities = tuple(
                Identity(self._entries[entry_id], self._held[entry_id].svid)
                for entry_id in self._order
                if entry_id in self._held
            )
            self._snapshot = Snapshot(
                revision=self._revision,
                identities=identities,
                bundle=self._bundle,
                federated_bundles=MappingProxyType(dict(self._federated)),
                entries=tuple(self._entries[entry_id] for entry_id in self._order),
                synced=self._synced,
                server_away=self._server_away,
            )
        return self._snapshot

    async def watch(self) -> AsyncGenerator[Snapshot, None]:
        """Yield the current snapshot at once, then the newest one after each change.

        A consumer slower than the changes sees only the latest snapshot when it comes back.
        Stopping the iteration or cancelling the consumer leaves nothing registered behind.
        """
        seen = -1
        loop = asyncio.get_running_loop()
        while True:
            current = self.snapshot()
            if current.revision != seen:
                seen = current.revision
                yield current
                continue
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)

    @contextmanager
    def demand(self, selectors: frozenset[Selector]) -> Iterator[None]:
        """Keep the entries matching ``selectors`` wanted while the block runs (a stream).

        Entries without an SVID are minted at once (demand listeners are told); SVIDs of
        wanted entries are never evicted.
        """
        self._subscriptions[selectors] += 1
        try:
            self.touch(selectors)
            yield
        finally:
            self._subscriptions[selectors] -= 1
            if self._subscriptions[selectors] <= 0:
                del self._subscriptions[selectors]
            now = self._clock.now()
            for entry_id in self._matching_ids(selectors):
                self._last_access[entry_id] = now

    async def fetch_jwt_svid(self, entry: RegistrationEntry, audience: Sequence[str]) -> JwtSvid:
        """A JWT-SVID for ``entry`` and exactly these audiences, from the JWT cache when fresh.

        Raises :class:`InvalidArgumentError` for an empty audience and whatever the server call
        raises (:class:`~pyspire_sdk.errors.UnavailableError` when it cannot be reached).
        """
        audiences = tuple(audience)
        if entry.id in self._entries:
            self._last_access[entry.id] = self._clock.now()
        return await self._jwt.get(
            entry, audiences, lambda: self._api.new_jwt_svid(entry.id, audiences)
        )

    # -- what the sync manager uses ----------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the current state."""
        return self._revision

    @property
    def max_size(self) -> int:
        """The soft bound on cached X509-SVIDs."""
        return self._max_size

    @property
    def svid_count(self) -> int:
        """How many X509-SVIDs are cached now."""
        return len(self._held)

    @property
    def jwt_svids(self) -> JwtSvidCache:
        """The JWT-SVID cache behind :meth:`fetch_jwt_svid`."""
        return self._jwt

    @property
    def watchers(self) -> int:
        """How many :meth:`watch` iterators are waiting for a change now."""
        return len(self._waiters)

    @property
    def synced(self) -> bool:
        """Whether the authorized entries are known (from a sync or from :meth:`restore`)."""
        return self._synced

    def entries(self) -> tuple[RegistrationEntry, ...]:
        """Every authorized entry, oldest first, whether or not it holds an SVID."""
        return tuple(self._entries[entry_id] for entry_id in self._order)

    def issued(self, entry_id: str) -> IssuedSvid | None:
        """The SVID held for an entry, with its facts, or None."""
        return self._held.get(entry_id)

    def update(
        self,
        entries: Sequence[RegistrationEntry],
        bundle: Bundle,
        federated_bundles: Mapping[TrustDomain, Bundle],
    ) -> None:
        """Replace the authorized entries and the bundles with what the server just said.

        SVIDs (and JWT-SVIDs) of entries that are gone are dropped at once; SVIDs of changed
        entries stay until re-issued (see :meth:`stale_entries`); federated bundles not in
        ``federated_bundles`` are dropped; SVIDs beyond the size bound are evicted. Entries
        marked ``store_svid`` are left out: their SVIDs go to SVID stores
        (:mod:`pyspire.agent.stored_svids`), never to workloads.
        """
        visible = not self._synced
        self._synced = True
        incoming = {entry.id: entry for entry in entries if not entry.store_svid}
        for entry_id in list(self._entries):
            if entry_id not in incoming:
                visible |= self._held.pop(entry_id, None) is not None
                self._last_access.pop(entry_id, None)
                self._requested.discard(entry_id)
        for entry_id, entry in incoming.items():
            if self._entries.get(entry_id) != entry:
                visible = True
        self._set_entries(incoming)
        self._jwt.retain({entry.id: entry.revision_number for entry in incoming.values()})

        if bundle != self._bundle:
            self._set_bundle(bundle)
            visible = True
        federated = dict(federated_bundles)
        if federated != self._federated:
            self._federated = federated
            visible = True

        evicted = self._evict()
        if evicted:
            _log.debug("x509 svids evicted over the cache size", count=len(evicted))
            visible = True
        if visible:
            self._changed()

    def _set_bundle(self, bundle: Bundle) -> None:
        """Take a new bundle of our trust domain: index its authorities, note new taints, and
        drop the JWT-SVIDs its tainted JWT keys signed."""
        self._bundle = bundle
        self._authorities = authority_index(bundle)
        self._taints.observe(self._authorities, self._clock.now())
        tainted_keys = {a.key_id for a in bundle.jwt_authorities if a.tainted}
        dropped = self._jwt.drop_signed_by(tainted_keys)
        if dropped:
            _log.info("jwt svids signed by a tainted authority dropped", count=dropped)

    def restore(self, contents: CacheContents) -> int:
        """Start from what an earlier run of the agent kept (before the first sync); returns
        how many SVIDs were taken. Expired SVIDs and SVIDs of entries not in ``contents`` are
        left out; the next sync replaces the entries and renews what needs renewing."""
        now = self._clock.now()
        self._set_entries({entry.id: entry for entry in contents.entries if not entry.store_svid})
        self._held = {
            item.entry_id: item
            for item in contents.issued
            if item.entry_id in self._entries and now < item.not_after
        }
        if contents.bundle is not None:
            self._set_bundle(contents.bundle)
        self._federated = dict(contents.federated_bundles)
        self._synced = True
        self._changed()
        return len(self._held)

    def contents(self) -> CacheContents:
        """What :meth:`restore` takes back after a restart."""
        return CacheContents(
            entries=self.entries(),
            issued=tuple(
                self._held[entry_id] for entry_id in self._order if entry_id in self._held
            ),
            bundle=self._bundle,
            federated_bundles=MappingProxyType(dict(self._federated)),
        )

    def set_server_away(self, away: bool) -> None:
        """Record whether the last attempt to reach the server failed (see
        :attr:`~pyspire.agent.identities.Snapshot.server_away`)."""
        if away != self._server_away:
            self._server_away = away
            self._changed()

    def stale_entries(self, now: datetime) -> list[StaleEntry]:
        """Entries that need a new X509-SVID now, wanted ones first, within the size bound.

        An entry's SVID is stale when it is missing, its entry's revision changed since it was
        issued, half its lifetime has passed, it expired, or the authority that signed it is no
        longer in our bundle or is tainted there; SVIDs of a tainted authority come due over
        :data:`~pyspire.agent.tainted.TAINT_SPREAD` (see :mod:`pyspire.agent.tainted`).
        """
        wanted = self._wanted()
        stale: list[StaleEntry] = []
        for entry_id in wanted:
            entry = self._entries[entry_id]
            held = self._held.get(entry_id)
            reason = stale_reason(entry, held, now, self._authorities, self._taints)
            if reason is not None:
                stale.append(StaleEntry(entry, reason))
        return stale

    def demanded_entries(self) -> list[RegistrationEntry]:
        """Entries a workload wants that hold no SVID: what a mint between syncs is for."""
        demanded = self._subscribed_ids() | (self._requested & self._entries.keys())
        return [
            self._entries[entry_id]
            for entry_id in self._order
            if entry_id in demanded and entry_id not in self._held
        ]

    def store(self, issued: Sequence[IssuedSvid]) -> int:
        """Keep newly issued SVIDs (one revision bump for all); returns how many were kept.

        An SVID for an entry that is gone by now is discarded.
        """
        kept = 0
        for item in issued:
            if item.entry_id not in self._entries:
                continue
            self._held[item.entry_id] = item
            self._requested.discard(item.entry_id)
            kept += 1
        if kept:
            self._changed()
        return kept

    def clear(self) -> None:
        """Forget every entry, SVID and JWT-SVID (the server no longer accepts this agent).

        Bundles are kept: they say whom to trust, not who we are.
        """
        had_identities = bool(self._held) or bool(self._entries)
        self._set_entries({})
        self._held.clear()
        self._last_access.clear()
        self._requested.clear()
        self._jwt.clear()
        if had_identities:
            self._changed()

    async def run(self) -> None:
        """Drop every X509-SVID the moment it expires, until cancelled."""
        while True:
            self._expiry_moved.clear()
            self.snapshot()  # drops what is due
            due = self._next_expiry
            delay = None if due is None else (due - self._clock.now()).total_seconds()
            await sleep_or_wake(self._clock, delay, self._expiry_moved)

    async def close(self) -> None:
        """Cancel JWT-SVID mints in flight."""
        await self._jwt.close()

    # -- demand from workloads ---------------------------------------------------------------

    def add_demand_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously) whenever a workload wants an entry without an SVID."""
        self._demand_listeners.append(listener)

    def touch(self, selectors: frozenset[Selector]) -> bool:
        """Record that a workload with ``selectors`` asked for its identities now.

        Returns whether every matching entry holds an SVID; when one does not, it is minted
        regardless of the size bound and demand listeners are told.
        """
        now = self._clock.now()
        missing = False
        for entry_id in self._matching_ids(selectors):
            self._last_access[entry_id] = now
            if entry_id not in self._held:
                self._requested.add(entry_id)
                missing = True
        if missing:
            for listener in tuple(self._demand_listeners):
                listener()
        return not missing

    # -- internals ---------------------------------------------------------------------------

    def _changed(self) -> None:
        self._revision += 1
        self._snapshot = None
        expiry = min((item.not_after for item in self._held.values()), default=None)
        if expiry != self._next_expiry:
            self._next_expiry = expiry
            self._expiry_moved.set()
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _set_entries(self, entries: dict[str, RegistrationEntry]) -> None:
        self._entries = entries
        self._order = sorted(entries, key=lambda entry_id: entry_age(entries[entry_id]))
        self._matches.clear()

    def _drop_expired(self) -> None:
        now = self._clock.now()
        expired = [entry_id for entry_id, item in self._held.items() if now >= item.not_after]
        for entry_id in expired:
            del self._held[entry_id]
        if expired:
            _log.warning(
                "x509 svids expired before they could be renewed; no longer served",
                count=len(expired),
                entry_ids=expired[:10],
            )
            self._changed()

    def _matching_ids(self, selectors: frozenset[Selector]) -> list[str]:
        found = self._matches.get(selectors)
        if found is None:
            found = [
                entry_id for entry_id in self._order if entitled(self._entries[entry_id], selectors)
            ]
            if len(self._matches) >= MATCH_MEMO_SIZE:
                self._matches.clear()
            self._matches[selectors] = found
        return found

    def _subscribed_ids(self) -> set[str]:
        subscribed: set[str] = set()
        for selectors in self._subscriptions:
            subscribed.update(self._matching_ids(selectors))
        return subscribed

    def _wanted(self) -> list[str]:
        demanded = self._subscribed_ids() | (self._requested & self._entries.keys())
        wanted = [entry_id for entry_id in self._order if entry_id in demanded]
        chosen = set(wanted)
        for entry_id in self._order:
            if entry_id in self._held and entry_id not in chosen:
                wanted.append(entry_id)
                chosen.add(entry_id)
        room = self._max_size - len(chosen)
        for entry_id in self._order:
            if room <= 0:
                break
            if entry_id not in chosen:
                wanted.append(entry_id)
                chosen.add(entry_id)
                room -= 1
        return wanted

    def _evict(self) -> list[str]:
        excess = len(self._held) - self._max_size
        if excess <= 0:
            return []
        protected = self._subscribed_ids() | self._requested
        idle_since = self._clock.now() - IDLE_BEFORE_EVICTION
        rank = {entry_id: index for index, entry_id in enumerate(self._order)}
        candidates = sorted(
            (
                entry_id
                for entry_id in self._held
                if entry_id not in protected
                and self._last_access.get(entry_id, _EPOCH) <= idle_since
            ),
            key=lambda entry_id: (
                self._last_access.get(entry_id, _EPOCH),
                -rank.get(entry_id, 0),
            ),
        )
        evicted = candidates[:excess]
        for entry_id in evicted:
            del self._held[entry_id]
        return evicted


def stale_reason(
    entry: RegistrationEntry,
    held: IssuedSvid | None,
    now: datetime,
    authorities: Mapping[bytes, bool],
    taints: TaintSchedule,
) -> StaleReason | None:
    """Why ``entry`` needs a new X509-SVID now, or None while ``held`` is good.

    ``authorities`` is :func:`authority_index` of our bundle and ``taints`` the schedule that
    observed it. An SVID whose issuer is tainted is stale only from its moment in the spread
    (:meth:`TaintSchedule.due`), so a taint never has every SVID re-minted at once. Shared by
    the workload cache and the cache of stored SVIDs, so both renew on the same rules.
    """
    if held is None:
        return StaleReason.MISSING
    if held.entry_revision != entry.revision_number:
        return StaleReason.ENTRY_CHANGED
    if now >= held.not_after:
        return StaleReason.EXPIRED
    if now >= held.half_life():
        return StaleReason.HALF_LIFE
    matched = [authorities[key] for key in held.issuer_ids if key in authorities]
    if not matched:
        return StaleReason.ISSUER_UNTRUSTED
    if any(matched) and taints.due(entry.id, held.issuer_ids, now):
        return StaleReason.ISSUER_TAINTED
    return None


def _spki(public_key: object) -> bytes:
    encoded: bytes = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


def _public_key_info(certificate_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo element of a certificate, as the certificate carries it.

    ``Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { version [0] OPTIONAL,
    serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }``.
    Call it on a certificate ``cryptography`` has parsed: the walk relies on that structure.
    """
    _, tbs_start, _ = read_tlv(certificate_der)
    _, position, _ = read_tlv(certificate_der, tbs_start)
    if certificate_der[position] == _VERSION_TAG:
        _, _, position = read_tlv(certificate_der, position)
    for _ in range(_FIELDS_BEFORE_KEY):
        _, _, position = read_tlv(certificate_der, position)
    _, _, end = read_tlv(certificate_der, position)
    return certificate_der[position:end]


_VERSION_TAG = 0xA0
_FIELDS_BEFORE_KEY = 5
"""serialNumber, signature, issuer, validity, subject."""


def _certifies(leaf: x509.Certificate, leaf_key_info: bytes, public_key_info: bytes) -> bool:
    """Whether the leaf carries the public key whose SubjectPublicKeyInfo is
    ``public_key_info``: the same bytes, or (another encoding of a key) the same key."""
    if leaf_key_info == public_key_info:
        return True
    try:
        return _spki(leaf.public_key()) == public_key_info
    except (ValueError, UnsupportedAlgorithm):
        return False


def _names_and_authority(
    leaf: x509.Certificate, top: x509.Certificate
) -> tuple[list[str], bytes | None]:
    """The leaf's URI SANs, and the key identifier of the authority that signed ``top`` (None
    when it names none), from one pass over each certificate's extensions."""
    uris: list[str] = []
    for item in leaf.extensions:
        if item.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            uris = item.value.get_values_for_type(x509.UniformResourceIdentifier)
            break
    for item in top.extensions:
        if item.oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            key_identifier: bytes | None = item.value.key_identifier
            return uris, key_identifier
    return uris, None


def _key_id(certificate: x509.Certificate) -> bytes:
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest
    return ski.value.digest


def _issuer_ids(
    chain_der: Sequence[bytes], top: x509.Certificate, authority_key_id: bytes | None
) -> frozenset[bytes]:
    """Identifiers of the authority above the chain's top certificate, plus the certificates of
    the chain above the leaf (an authority in the bundle may be one of them).

    The issuer is named by its key identifier when the top certificate carries one
    (``authority_key_id``; CAs that rotate keep the same subject name, so a name alone would
    match a removed CA), else by name.
    """
    ids: set[bytes] = {b"cert:" + hashlib.sha256(der).digest() for der in chain_der[1:]}
    if authority_key_id:
        ids.add(b"key:" + authority_key_id)
    else:
        ids.add(b"name:" + top.issuer.public_bytes())
    return frozenset(ids)


def authority_index(bundle: Bundle) -> dict[bytes, bool]:
    """Identifiers of every X.509 authority in ``bundle`` (see :func:`_issuer_ids`) → tainted:
    what :func:`stale_reason` recognises an SVID's issuer by."""
    index: dict[bytes, bool] = {}
    for authority in bundle.x509_authorities:
        try:
            certificate = x509.load_der_x509_certificate(authority.der)
            key_id = _key_id(certificate)
        except ValueError:
            _log.warning("bundle holds an x509 authority that does not parse; ignoring it")
            continue
        for identifier in (
            b"cert:" + hashlib.sha256(authority.der).digest(),
            b"key:" + key_id,
            b"name:" + certificate.subject.public_bytes(),
        ):
            index[identifier] = index.get(identifier, False) or authority.tainted
    return index
