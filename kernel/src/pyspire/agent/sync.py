"""The sync manager: keeps the workload cache in step with what the server authorizes.

Every sync interval (each wait shortened by up to :data:`INTERVAL_JITTER` at random, so that
agents do not sync in step) and whenever asked, it fetches the agent's authorized entries, our
bundle and the bundles of the trust domains those entries federate with, hands them to the
:class:`~pyspire.agent.cache.WorkloadCache`, and gets new X509-SVIDs for the entries whose SVID
is missing, changed, half-way through its life, expired, or signed by an authority the bundle no
longer trusts. Keys are generated here, on the node, and only CSRs go to the server, in batches.

Between syncs, a workload's demand for an entry without an SVID (see
:meth:`~pyspire.agent.cache.WorkloadCache.demand`) wakes the manager, which mints the SVIDs
wanted by then in one batch, without fetching the entries again; demand arriving meanwhile is
served by the next batch.

Failure handling:

- one item the server refuses does not stop the others; it is logged with the server's reason
  and retried at the next sync;
- :class:`~pyspire_sdk.errors.UnavailableError` keeps the cache as it is (SVIDs are still
  dropped when they expire) and retries by the one retry policy (:mod:`pyspire_sdk.backoff`)
  after 1 s, 2 s, 4 s, ... up to the sync interval, never longer, each delay shortened by up
  to :data:`RETRY_JITTER` at random so that agents do not retry in step. So the agent is
  back in sync within about one interval of the server's return, however long it was away,
  while a server that is down sees no more than one attempt per interval from each agent
  (SPIRE backs off to 8 minutes instead, which leaves workloads on expiring SVIDs long after
  the server is back). The state change (lost, regained) is logged once, not every attempt;
  demand does not cut a retry delay short;
- :class:`~pyspire_sdk.errors.PermissionDeniedError` means the server no longer accepts this
  agent (banned, evicted): identities are cleared, the error is logged and raised, and the
  manager stops syncing.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CSR_BATCH",
    "DEFAULT_SYNC_INTERVAL",
    "INTERVAL_JITTER",
    "RETRY_JITTER",
    "RETRY_START",
    "SyncManager",
    "SyncReport",
]

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NamedTuple

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from pyspire.agent.cache import IssuedSvid, StaleEntry, StaleReason, WorkloadCache
from pyspire.agent.csr import workload_csr
from pyspire.agent.server_api import AgentServerApi, SvidRequest, SvidResult
from pyspire.agent.stored_svids import StoredSvidCache
from pyspire.telemetry.metrics import AGENT_SYNC, PrometheusMetrics
from pyspire.transport.calls import counted
from pyspire.waiting import sleep_or_wake
from pyspire_sdk.backoff import Backoff, BackoffPolicy
from pyspire_sdk.clock import Clock
from pyspire_sdk.errors import InvalidArgumentError, PermissionDeniedError, UnavailableError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.plugins.key_manager import KeyType
from pyspire_sdk.spiffeid import TrustDomain

DEFAULT_SYNC_INTERVAL = timedelta(seconds=5)
"""SPIRE's ``sync_interval``."""

DEFAULT_CSR_BATCH = 500
"""How many CSRs go to the server in one BatchNewX509SVID call (SPIRE's page size)."""

RETRY_START = 1.0
"""Seconds before the first retry after a failed sync; each further retry waits twice as long,
up to the sync interval."""

RETRY_JITTER = 0.2
"""Each retry delay is shortened by a random fraction of itself of up to this much."""

INTERVAL_JITTER = 0.1
"""Each wait of the sync interval is shortened by a random fraction of it of up to this much
(SPIRE draws its sync interval with 10 % jitter too). Without it, agents whose syncs ended
together (a storm of starts, a pause of the server or of a network path) stay in step for good,
and each such event gathers more of them: the server then answers them in bursts, and the
last of a burst waits for all the others."""

_log = structlog.get_logger("pyspire.agent.sync")


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync did: how many entries are authorized, how many SVIDs were issued, and
    which entries the server (or our checks) refused, with the reason."""

    entries: int
    issued: int
    failed: Mapping[str, str] = field(default_factory=dict)
    federated_trust_domains: tuple[TrustDomain, ...] = ()


class SyncManager:
    """Runs syncs on the injected clock; see the module documentation for the rules.

    Guarantees: syncs and mints never overlap (they share one lock); after a permission denial
    every later sync raises :class:`PermissionDeniedError` without calling the server. ``rng``
    draws the retry jitter (injected so tests are deterministic). Entries marked ``store_svid``
    go to ``stored``, which gets their SVIDs, on the same renewal rules and in the same
    batches; the workload cache never holds them.
    """

    def __init__(
        self,
        api: AgentServerApi,
        cache: WorkloadCache,
        clock: Clock,
        *,
        interval: timedelta | float = DEFAULT_SYNC_INTERVAL,
        key_type: KeyType = KeyType.EC_P256,
        csr_batch: int = DEFAULT_CSR_BATCH,
        rng: random.Random | None = None,
        stored: StoredSvidCache | None = None,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else float(interval)
        if seconds <= 0:
            raise InvalidArgumentError(f"interval must be positive, found {seconds}s")
        if csr_batch < 1:
            raise InvalidArgumentError(f"csr_batch must be at least 1, found {csr_batch}")
        self._api = api
        self._cache = cache
        self._stored = stored
        self._clock = clock
        self._interval = seconds
        self._key_type = KeyType.parse(key_type)
        self._csr_batch = csr_batch
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._retries = Backoff(
            BackoffPolicy(initial=min(RETRY_START, seconds), maximum=seconds, jitter=RETRY_JITTER),
            rng=rng,
        )
        self._rng = rng
        self._intervals = BackoffPolicy(
            initial=seconds, maximum=seconds, multiplier=1, jitter=INTERVAL_JITTER
        )
        self._interval_delay = self._intervals.delay(1, rng)
        self._metrics = metrics if metrics is not None else PrometheusMetrics("pyspire_agent")
        self._retry_delay = 0.0
        self._last_success: datetime | None = None
        self._denied: PermissionDeniedError | None = None
        cache.add_demand_listener(self.request_sync)

    # -- state -------------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        """Seconds between syncs while the server answers."""
        return self._interval

    @property
    def consecutive_failures(self) -> int:
        """Syncs that failed in a row since the last one that succeeded."""
        return self._retries.failures

    @property
    def next_delay(self) -> float:
        """Seconds :meth:`run` waits before the next attempt: the interval shortened by up to
        :data:`INTERVAL_JITTER` (drawn again after every sync that succeeds), or the retry
        delay (never longer than the interval)."""
        if self._retries.failures == 0:
            return self._interval_delay
        return self._retry_delay

    @property
    def last_success(self) -> datetime | None:
        """When the last sync succeeded, on the injected clock."""
        return self._last_success

    @property
    def denied(self) -> PermissionDeniedError | None:
        """The server's refusal that stopped this manager, if any."""
        return self._denied

    # -- operations --------------------------------------------------------------------------

    def request_sync(self) -> None:
        """Ask :meth:`run` to mint the SVIDs workloads want now instead of at the next sync.

        Ignored while retrying, so that demand cannot hammer a server that is away.
        """
        self._wake.set()

    async def mint_now(self) -> int:
        """Mint the SVIDs of wanted entries that hold none, in batches; returns how many were
        issued. Raises as :meth:`sync_now` does (a failure counts towards the retry delay)."""
        async with self._lock:
            if self._denied is not None:
                raise PermissionDeniedError(f"syncing stopped: {self._denied}")
            wanted = self._cache.demanded_entries()
            if not wanted:
                return 0
            try:
                issued, _ = await self._issue_all(
                    [StaleEntry(entry, StaleReason.MISSING) for entry in wanted]
                )
            except PermissionDeniedError as error:
                self._deny(error)
                raise
            except Exception as error:
                self._failed(error)
                raise
            _log.debug("x509 svids minted on demand", requested=len(wanted), issued=issued)
            return issued

    async def sync_now(self) -> SyncReport:
        """Sync once, now (waiting for a sync in progress to finish first).

        Raises :class:`UnavailableError` when the server cannot be reached (the cache is kept)
        and :class:`PermissionDeniedError` when it refuses the agent (identities are cleared).
        """
        async with self._lock:
            if self._denied is not None:
                raise PermissionDeniedError(f"syncing stopped: {self._denied}")
            try:
                with counted(self._metrics, AGENT_SYNC):
                    report = await self._sync()
            except PermissionDeniedError as error:
                self._deny(error)
                raise
            except Exception as error:
                self._failed(error)
                raise
            self._succeeded()
            return report

    async def run(self) -> None:
        """Sync every interval (retrying sooner while the server is away) and mint on demand
        in between, until cancelled.

        Returns never; raises :class:`PermissionDeniedError` when the server refuses the agent.
        """
        while True:
            await self._attempt(self.sync_now)
            await self._wait(self.next_delay)

    # -- internals ---------------------------------------------------------------------------

    async def _attempt(self, operation: Callable[[], Awaitable[object]]) -> None:
        try:
            await operation()
        except PermissionDeniedError:
            raise
        except Exception as error:
            # The operation logged the state change; the loop retries.
            _log.debug("sync attempt failed", error_type=type(error).__name__)

    async def _wait(self, delay: float) -> None:
        """Wait ``delay`` seconds, minting on demand meanwhile while the server answers."""
        deadline = self._clock.now() + timedelta(seconds=delay)
        while (remaining := (deadline - self._clock.now()).total_seconds()) > 0:
            if self._retries.failures:
                await self._clock.sleep(remaining)
                break
            if not await sleep_or_wake(self._clock, remaining, self._wake):
                break
            self._wake.clear()
            await self._attempt(self.mint_now)
        self._wake.clear()

    def _deny(self, error: PermissionDeniedError) -> None:
        self._denied = error
        self._cache.clear()
        _log.error(
            "server refused the agent; workload identities cleared, syncing stopped",
            reason=str(error),
        )

    def _failed(self, error: Exception) -> None:
        self._retry_delay = self._retries.failed()
        self._cache.set_server_away(True)
        if self._retries.failures == 1:
            _log.warning(
                "sync with the server failed; keeping cached identities, retrying with backoff",
                error=str(error),
                error_type=type(error).__name__,
                retry_in=self.next_delay,
                exc_info=not isinstance(error, UnavailableError),
            )
        else:
            _log.debug(
                "sync with the server failed again",
                error=str(error),
                failures=self._retries.failures,
                retry_in=self.next_delay,
            )

    def _succeeded(self) -> None:
        if self._retries.failures:
            _log.info("sync with the server restored", failed_attempts=self._retries.failures)
        self._retries.succeeded()
        self._interval_delay = self._intervals.delay(1, self._rng)
        self._last_success = self._clock.now()
        self._cache.set_server_away(False)

    async def _sync(self) -> SyncReport:
        entries = await self._api.fetch_authorized_entries()
        bundles = await self._api.fetch_bundles(entries)
        bundle, federated = bundles.bundle, dict(bundles.federated)
        self._cache.update(entries, bundle, federated)
        now = self._clock.now()
        stale = self._cache.stale_entries(now)
        if self._stored is not None:
            self._stored.update(entries, bundle, federated)
            stale += self._stored.stale_entries(now)
        issued, failed = await self._issue_all(stale)
        if stale:
            _log.debug("x509 svids renewed", requested=len(stale), issued=issued)
        return SyncReport(
            entries=len(entries),
            issued=issued,
            failed=failed,
            federated_trust_domains=tuple(federated),
        )

    async def _issue_all(self, stale: Sequence[StaleEntry]) -> tuple[int, dict[str, str]]:
        failed: dict[str, str] = {}
        issued = 0
        for start in range(0, len(stale), self._csr_batch):
            kept, refused = await self._issue(stale[start : start + self._csr_batch])
            issued += kept
            failed.update(refused)
        return issued, failed

    async def _issue(self, batch: Sequence[StaleEntry]) -> tuple[int, dict[str, str]]:
        entries = [item.entry for item in batch]
        keys = await asyncio.to_thread(_make_requests, self._key_type, entries)
        requests = [
            SvidRequest(entry_id=entry.id, csr_der=key.csr)
            for entry, key in zip(entries, keys, strict=True)
        ]
        results = await self._api.new_x509_svids(requests)
        issued, refused = await asyncio.to_thread(_inspect_results, entries, keys, results)
        kept = self._cache.store(issued)
        if self._stored is not None:
            kept += self._stored.store(issued)
        for entry in entries:
            reason = refused.get(entry.id)
            if reason is not None:
                _log.warning(
                    "x509 svid not issued; retrying at the next sync",
                    entry_id=entry.id,
                    spiffe_id=str(entry.spiffe_id),
                    reason=reason,
                )
        return kept, refused


def _generate_key(key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if key_type is KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


class _NewKey(NamedTuple):
    """A key made for one entry: the private key (PKCS#8 DER), its CSR (DER) and the
    SubjectPublicKeyInfo DER of its public key."""

    private_key: bytes
    csr: bytes
    public_key_info: bytes


def _make_requests(key_type: KeyType, entries: Sequence[RegistrationEntry]) -> list[_NewKey]:
    """A fresh key and its CSR for each entry; runs in a worker thread.

    The server takes only the public key from a CSR; the URI SAN is there for whoever reads one
    (:mod:`pyspire.agent.csr`).
    """
    made: list[_NewKey] = []
    for entry in entries:
        key = _generate_key(key_type)
        csr = workload_csr(key, str(entry.spiffe_id))
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        made.append(_NewKey(pkcs8, csr.der, csr.public_key_info))
    return made


def _inspect_results(
    entries: Sequence[RegistrationEntry],
    keys: Sequence[_NewKey],
    results: Sequence[SvidResult],
) -> tuple[list[IssuedSvid], dict[str, str]]:
    """Pair the server's results with our keys and check them; runs in a worker thread.

    The keys were made here, so their public keys are known and are not decoded again from
    the private keys to check that each leaf certifies its key."""
    by_entry: dict[str, SvidResult] = {}
    for answer in results:
        by_entry.setdefault(answer.entry_id, answer)
    issued: list[IssuedSvid] = []
    refused: dict[str, str] = {}
    for entry, key in zip(entries, keys, strict=True):
        result = by_entry.get(entry.id)
        if result is None:
            refused[entry.id] = "server returned no result for the entry"
            continue
        if result.svid is None:
            refused[entry.id] = result.error or "server returned no svid and no reason"
            continue
        try:
            svid = replace(result.svid, private_key=key.private_key)
            issued.append(IssuedSvid.inspect(entry, svid, public_key_info=key.public_key_info))
        except InvalidArgumentError as error:
            refused[entry.id] = str(error)
    return issued, refused
