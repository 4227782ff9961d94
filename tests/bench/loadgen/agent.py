"""One simulated agent: the agent's own identity, cache and sync parts against a real server.

What runs is the code of ``pyspire-agent``: :class:`~pyspire.agent.node_identity.NodeIdentity`
attests with the join token (no call before AttestAgent: the bootstrap bundle verifies the
server) and renews the agent SVID
at about half its life; :class:`~pyspire.agent.sync.SyncManager` fetches the authorized entries
(SyncAuthorizedEntries) and the bundle (GetBundle) every sync interval and mints workload SVIDs
(BatchNewX509SVID, a fresh key and CSR each) for entries whose SVID is missing, changed or half
through its life. Left out: the Workload API (nobody asks for identities) and the agent's disk
key manager (keys stay in memory).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from pyspire_keymanager_memory import MemoryKeyManager
from pyspire_nodeattestor_join_token import AgentJoinTokenAttestor, AgentJoinTokenConfig

from pyspire.agent.bootstrap import BootstrapTrust
from pyspire.agent.cache import WorkloadCache
from pyspire.agent.client import ServerClient
from pyspire.agent.node_identity import NodeIdentity
from pyspire.agent.storage import AgentStateStore
from pyspire.agent.sync import SyncManager
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.plugin import NoConfig
from pyspire_sdk.testing import make_host_services

from .source import SOURCE_ADDRESS, address_of
from .tally import SLOW, Tally, failure_kind

JOIN_TOKEN = "join_token"


@dataclass(frozen=True)
class AgentSettings:
    """What every simulated agent of a worker shares."""

    port: int
    bundle: Bundle
    sync_interval: float
    entries: int
    data_dir: Path


class SimulatedAgent:
    """One agent; :meth:`start` attests and waits for its first SVIDs, :meth:`run` keeps it
    syncing and rotating until cancelled, :meth:`burst` re-mints all its SVIDs at once."""

    def __init__(
        self,
        index: int,
        token: str,
        settings: AgentSettings,
        tally: Tally,
        metrics: PrometheusMetrics,
    ) -> None:
        self.index = index
        self.address = address_of(index)
        self._token = token
        self._settings = settings
        self._tally = tally
        self._metrics = metrics
        self._clock = SystemClock()
        self._client = ServerClient(
            trust_domain=settings.bundle.trust_domain,
            address="127.0.0.1",
            port=settings.port,
            bundle=settings.bundle,
        )
        self._cache = WorkloadCache(self._client, self._clock)
        self._sync = SyncManager(
            self._client, self._cache, self._clock, interval=settings.sync_interval, metrics=metrics
        )
        self._identity: NodeIdentity | None = None
        self.attested_at = 0.0
        self.ready_at = 0.0
        """Wall time (``time.time``) of the agent SVID and of holding every entry's SVID."""
        self.start_error = ""

    @property
    def identity(self) -> NodeIdentity:
        if self._identity is None:
            raise RuntimeError(f"agent {self.index} has not started")
        return self._identity

    async def _build_identity(self) -> NodeIdentity:
        directory = self._settings.data_dir / f"agent-{self.index}"
        directory.mkdir(parents=True, exist_ok=True)
        host = make_host_services(directory, clock=self._clock, plugin_name=JOIN_TOKEN)
        attestor = AgentJoinTokenAttestor()
        await attestor.configure(AgentJoinTokenConfig(token=self._token), host)
        keys = MemoryKeyManager()
        await keys.configure(NoConfig(), host)
        return NodeIdentity(
            client=self._client,
            attestor_name=JOIN_TOKEN,
            attestor=attestor,
            key_manager=keys,
            store=AgentStateStore(directory, self._settings.bundle.trust_domain),
            bootstrap=BootstrapTrust(self._settings.bundle, "load generator"),
            clock=self._clock,
        )

    async def start(self) -> bool:
        """Attest, then sync until every entry holds an SVID; False (with :attr:`start_error`)
        when the server refused the agent. Bound to this agent's source address from here on."""
        SOURCE_ADDRESS.set(self.address)
        try:
            self._identity = await self._build_identity()
            await self._identity.start()
        except Exception as error:
            self.start_error = failure_kind(error)
            self._tally.current.failures[self.start_error] += 1
            await self.close()  # the agent exits: its connections go
            return False
        self.attested_at = time.time()
        if not await self._sync_until_complete():
            self.start_error = "refused by the server after attesting"
            await self.close()
            return False
        self.ready_at = time.time()
        return True

    async def _sync_until_complete(self) -> bool:
        """Sync (retrying as the agent does) until every entry holds an SVID; False when the
        server refused the agent, which ends its syncing as it ends the agent's."""
        while not await self.sync_once():
            if self._sync.denied is not None:
                return False
            await anyio.sleep(self._sync.next_delay)
        return True

    async def sync_once(self) -> bool:
        """One sync, recorded; True when it succeeded and every entry holds an SVID."""
        phase = self._tally.current
        started = time.perf_counter()
        try:
            report = await self._sync.sync_now()
        except Exception as error:
            phase.failures[failure_kind(error)] += 1
            return False
        took = time.perf_counter() - started
        phase.latencies.append(took)
        if took > SLOW:
            phase.slow.append((time.time() - took, took))
        phase.svids_issued += report.issued
        phase.agents_synced.add(self.index)
        for reason in report.failed.values():
            phase.failures[f"svid refused: {reason[:100]}"] += 1
        held = len(self._cache.snapshot().identities)
        return (
            not report.failed
            and report.entries >= self._settings.entries
            and held == report.entries
        )

    async def run(self) -> None:
        """Sync every interval (sooner while retrying) and rotate the agent SVID when due, as
        the agent does, until cancelled."""
        self.identity.add_listener(self._identity_changed)
        async with anyio.create_task_group() as group:
            group.start_soon(self.identity.run)
            while self._sync.denied is None:
                await anyio.sleep(self._sync.next_delay)
                await self.sync_once()
            group.cancel_scope.cancel()

    async def _identity_changed(self, identity: NodeIdentity) -> None:
        """A new agent SVID was installed (renewed or attested again)."""
        self._tally.current.agent_renewals += 1

    async def burst(self) -> float | None:
        """Forget every workload SVID and sync now, so that all are minted again at once;
        seconds until done, None when the server refused the agent."""
        started = time.perf_counter()
        self._cache.clear()
        if not await self._sync_until_complete():
            return None
        return time.perf_counter() - started

    async def close(self) -> None:
        await self._client.close()
