"""The agent's composition root: node identity, sync, Workload API, run together, stopped cleanly.

Start order: plugins (key manager, node attestor, workload attestors), the node identity (resume
from ``data_dir`` or attest), the workload SVIDs kept by the last run
(:mod:`pyspire.agent.workload_storage`), a first sync (entries, bundles, workload SVIDs) unless
kept SVIDs are there to serve at once, then the Workload API socket (with the agent's gRPC
health service beside it, :mod:`pyspire.agent.health`) and, when ``admin_socket_path`` is set,
the admin socket (:mod:`pyspire.agent.admin`: the Debug API, and the Delegated Identity API
for ``authorized_delegates``, attesting with the Workload API's attestor chain). Attestation
waits out a server that is away or busy, yielding to a stop request; a join token the resumed
identity makes unused is reported.
Background work — SVID rotation, periodic sync (the first one, when skipped before), dropping
SVIDs at expiry, keeping the workload SVIDs in ``data_dir``, delivering the SVIDs of entries
marked ``store_svid`` to SVID store plugins (:mod:`pyspire.agent.svid_stores`), following bundle
changes — belongs to one task group. A banned or evicted agent stops serving identities and says
why; a stop request closes the sockets (open streams end with UNAVAILABLE) and cancels the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import structlog

from pyspire.agent.admin import (
    AdminEndpoint,
    AgentStatus,
    DebugService,
    DelegatedIdentityService,
)
from pyspire.agent.bootstrap import BootstrapTrust, bootstrap_trust
from pyspire.agent.cache import CacheContents, WorkloadCache
from pyspire.agent.client import ServerClient
from pyspire.agent.health import AgentHealthService
from pyspire.agent.node_identity import NodeIdentity, NodeKeyManager
from pyspire.agent.readiness import AgentReadiness
from pyspire.agent.storage import STATE_FILE_NAME, AgentStateStore
from pyspire.agent.stored_svids import StoredSvidCache
from pyspire.agent.stored_targets import StoredTargetsFile
from pyspire.agent.svid_stores import SvidStoreDelivery
from pyspire.agent.sync import SyncManager
from pyspire.agent.workload.attestation import WorkloadAttestation
from pyspire.agent.workload.endpoint import WorkloadEndpoint
from pyspire.agent.workload.sds import SecretDiscoveryService
from pyspire.agent.workload.service import WorkloadApiService
from pyspire.agent.workload_storage import WorkloadSvidStore
from pyspire.catalog import (
    AGENT_KEY_MANAGER,
    AGENT_NODE_ATTESTOR,
    SVID_STORES,
    WORKLOAD_ATTESTORS,
    Catalog,
    Discovery,
    PlannedPlugin,
    Side,
    plan_plugins,
)
from pyspire.catalog.host import host_services_for
from pyspire.config import AgentConfig, LoadedConfig, read_join_token
from pyspire.tasks import run_services
from pyspire.telemetry.endpoints import TelemetryEndpoints, serve_telemetry
from pyspire.telemetry.metrics import CACHE_ENTRIES, CACHE_X509_SVIDS, PrometheusMetrics
from pyspire.waiting import run_until
from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.errors import PermissionDeniedError, PluginError, PyspireError
from pyspire_sdk.files import make_private_directory
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.key_manager import PrivateKeyExport
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor
from pyspire_sdk.plugins.svid_store import SvidStore
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor


def with_join_token(plugins: Mapping[str, object], token: str | None) -> Mapping[str, object]:
    """The plugins table with the agent's ``join_token`` handed to the ``join_token`` node
    attestor, unless its table already names one (the operator's explicit choice wins)."""
    if not token:
        return plugins
    attestors = plugins.get("node_attestor")
    if not isinstance(attestors, Mapping) or "join_token" not in attestors:
        return plugins
    table = attestors["join_token"]
    if not isinstance(table, Mapping) or table.get("token"):
        return plugins
    return {
        **plugins,
        "node_attestor": {**attestors, "join_token": {**table, "token": token}},
    }


@dataclass(frozen=True)
class _Plugins:
    """The configured plugins the agent works with."""

    key_manager: NodeKeyManager
    attestor_name: str
    attestor: AgentNodeAttestor
    workload_attestors: tuple[tuple[str, WorkloadAttestor], ...]
    svid_stores: Mapping[str, SvidStore]


def _configured_plugins(catalog: Catalog) -> _Plugins:
    """The catalog's plugins as the agent needs them; refuses a key manager whose keys are not
    in this process."""
    key_manager = catalog.one(AGENT_KEY_MANAGER)
    if not isinstance(key_manager, PrivateKeyExport):
        raise PluginError(
            "agent.plugins.key_manager: the agent needs a key manager that holds its "
            "keys in this process (memory or disk), since TLS needs the SVID key itself"
        )
    attestor = catalog.one_named(AGENT_NODE_ATTESTOR)
    return _Plugins(
        key_manager=key_manager,
        attestor_name=attestor.name,
        attestor=attestor.instance,
        workload_attestors=tuple(
            (plugin.name, plugin.instance) for plugin in catalog.chain(WORKLOAD_ATTESTORS)
        ),
        svid_stores={plugin.name: plugin.instance for plugin in catalog.chain(SVID_STORES)},
    )


@dataclass(frozen=True)
class _Parts:
    """What serves workloads once the agent has an identity."""

    cache: WorkloadCache
    sync: SyncManager
    delivery: SvidStoreDelivery
    svid_store: WorkloadSvidStore
    debug: DebugService


class AgentRuntime:
    """One agent process."""

    def __init__(
        self,
        loaded: LoadedConfig[AgentConfig],
        discovery: Discovery,
        *,
        clock: Clock | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = loaded.settings
        self._notify = notify
        self._plugins = loaded.plugins
        self._discovery = discovery
        self._clock = clock or SystemClock()
        self._stop = asyncio.Event()
        self.metrics = PrometheusMetrics("pyspire_agent")
        self.readiness = AgentReadiness(self._clock)
        self.telemetry = TelemetryEndpoints()
        self.ready = asyncio.Event()
        self.identity: NodeIdentity | None = None
        self.cache: WorkloadCache | None = None
        self._started_at = self._clock.now()
        self._log = structlog.get_logger("pyspire.agent")
        self._join_token: str | None = None

    @property
    def socket_path(self) -> Path:
        return self.settings.socket_path

    def stop(self) -> None:
        """Ask the agent to shut down (safe from a signal handler)."""
        self._stop.set()

    def _host_for(self, planned: PlannedPlugin) -> HostServices:
        return host_services_for(
            planned,
            trust_domain=self.settings.trust_domain,
            clock=self._clock,
            metrics=self.metrics,
            data_dir=self.settings.data_dir,
        )

    async def run(self) -> None:
        """Run until :meth:`stop`; raises what made start-up fail."""
        settings = self.settings
        self._started_at = self._clock.now()
        await asyncio.to_thread(make_private_directory, settings.data_dir, tighten=True)
        self._join_token = await asyncio.to_thread(read_join_token, settings)
        plugins = with_join_token(self._plugins, self._join_token)
        plan = plan_plugins(Side.AGENT, plugins, self._discovery, path="agent.plugins")
        async with (
            serve_telemetry(
                settings.telemetry,
                settings.health_checks,
                metrics=self.metrics,
                checks=self.readiness.checks(),
            ) as self.telemetry,
            Catalog.open(plan, host_for=self._host_for) as catalog,
        ):
            configured = _configured_plugins(catalog)
            client = ServerClient(
                trust_domain=settings.trust_domain,
                address=settings.server_address,
                port=settings.server_port,
                bundle=None,
            )
            try:
                await self._serve(client, configured)
            finally:
                await client.close()
        self._log.info("agent stopped")

    async def _serve(self, client: ServerClient, plugins: _Plugins) -> None:
        """Get an identity, then serve workloads until :meth:`stop`."""
        identity = await self._start_identity(client, plugins)
        if identity is None:
            self._log.info("agent stopped before it had an identity")
            return
        cache = self._start_cache(client, identity)
        try:
            parts = await self._start_parts(client, plugins, identity, cache)
            await self._restore_or_sync(parts)
            async with self._endpoints(parts, plugins):
                self.ready.set()
                self.readiness.serving = True
                await run_services(
                    {
                        "agent-svid": identity.run,
                        "sync": partial(self._sync, parts.sync, identity),
                        "svid-expiry": cache.run,
                        "keep-svids": partial(self._keep_svids, cache, parts.svid_store),
                        "bundle": partial(self._follow_bundle, cache, identity),
                        "svid-stores": parts.delivery.run,
                    },
                    stop=self._stop,
                    stopping=self._stopping,
                )
        finally:
            await cache.close()

    async def _start_identity(self, client: ServerClient, plugins: _Plugins) -> NodeIdentity | None:
        """The node identity, resumed from ``data_dir`` or attested; None when a stop request
        came first (attestation waits out a server that is away or busy, indefinitely)."""
        settings = self.settings

        async def bootstrap() -> BootstrapTrust:
            return await bootstrap_trust(settings)

        identity = NodeIdentity(
            client=client,
            attestor_name=plugins.attestor_name,
            attestor=plugins.attestor,
            key_manager=plugins.key_manager,
            store=AgentStateStore(settings.data_dir, settings.trust_domain),
            bootstrap=bootstrap,
            clock=self._clock,
        )
        if not await run_until(self._stop, identity.start):
            return None
        self.identity = self.readiness.identity = identity
        self._warn_if_join_token_unused(identity)
        self._log.info("agent identity ready", spiffe_id=str(identity.spiffe_id))
        return identity

    def _start_cache(self, client: ServerClient, identity: NodeIdentity) -> WorkloadCache:
        """The workload cache, measured, and cleared when the server revokes the agent."""
        cache = WorkloadCache(
            client, self._clock, x509_svid_cache_max_size=self.settings.x509_svid_cache_max_size
        )
        self.cache = self.readiness.cache = cache
        self.metrics.gauge(CACHE_X509_SVIDS, lambda: cache.svid_count)
        self.metrics.gauge(CACHE_ENTRIES, lambda: len(cache.entries()))

        async def stop_serving_when_revoked(changed: NodeIdentity) -> None:
            if changed.revoked:
                self._log.error(
                    "agent identity revoked; no identities are served",
                    reason=changed.revocation_reason,
                )
                cache.clear()

        identity.add_listener(stop_serving_when_revoked)
        return cache

    async def _start_parts(
        self,
        client: ServerClient,
        plugins: _Plugins,
        identity: NodeIdentity,
        cache: WorkloadCache,
    ) -> _Parts:
        """The sync manager, SVID store delivery, workload SVID storage and debug service."""
        settings = self.settings
        targets = StoredTargetsFile(settings.data_dir)
        stored = StoredSvidCache(plugins.svid_stores, self._clock, delivered=await targets.load())
        sync = SyncManager(
            client,
            cache,
            self._clock,
            interval=settings.sync_interval,
            key_type=settings.workload_x509_svid_key_type,
            stored=stored,
            metrics=self.metrics,
        )
        status = AgentStatus(identity, cache, stored, sync, self._clock, self._started_at)
        return _Parts(
            cache=cache,
            sync=sync,
            delivery=SvidStoreDelivery(stored, plugins.svid_stores, self._clock, targets=targets),
            svid_store=WorkloadSvidStore(
                settings.data_dir, identity.spiffe_id, plugins.key_manager
            ),
            debug=DebugService(status),
        )

    async def _restore_or_sync(self, parts: _Parts) -> None:
        """Serve the workload SVIDs the last run kept, or else sync once before serving."""
        kept = await parts.svid_store.load(self._clock.now())
        if kept is None:
            await self._first_sync(parts.sync)
            return
        restored = parts.cache.restore(kept)
        self._log.info(
            "serving the workload svids kept by the last run; syncing in the background",
            svids=restored,
            entries=len(kept.entries),
        )

    @contextlib.asynccontextmanager
    async def _endpoints(self, parts: _Parts, plugins: _Plugins) -> AsyncIterator[None]:
        """The Workload API socket (with the health service) and, when configured, the admin
        socket, open while the block runs."""
        settings = self.settings
        attestation = WorkloadAttestation(plugins.workload_attestors)
        service = WorkloadApiService(parts.cache, attestation, self._clock)
        sds = SecretDiscoveryService(parts.cache, attestation, self._clock, settings.sds)
        async with contextlib.AsyncExitStack() as endpoints:
            await endpoints.enter_async_context(
                WorkloadEndpoint(
                    settings.socket_path,
                    service,
                    health=AgentHealthService(self.readiness.checks()),
                    sds=sds,
                    metrics=self.metrics,
                )
            )
            if settings.admin_socket_path is not None:
                delegated = DelegatedIdentityService(
                    parts.cache,
                    attestation,
                    self._clock,
                    authorized_delegates=settings.authorized_delegates,
                )
                await endpoints.enter_async_context(
                    AdminEndpoint(settings.admin_socket_path, [parts.debug, delegated])
                )
            yield

    async def _stopping(self) -> None:
        self.readiness.serving = False
        self._log.info("agent stopping")

    def _warn_if_join_token_unused(self, identity: NodeIdentity) -> None:
        """A join token given to an agent that resumed another identity is not used: say so
        (in the log, and on standard error when the log goes to a file), so that a second run
        with a new token does not silently keep the old identity."""
        token = self._join_token
        if token is None or not identity.ignores_join_token(token):
            return
        state_file = self.settings.data_dir / STATE_FILE_NAME
        message = (
            f"the join token was not used: the agent resumed its stored identity "
            f"{identity.spiffe_id}; to attest with the new token, stop the agent and remove "
            f"{state_file}"
        )
        self._log.warning(
            "join token not used: the agent resumed its stored identity",
            agent_id=str(identity.spiffe_id),
            state_file=str(state_file),
        )
        if self._notify is not None and self.settings.log_file is not None:
            self._notify(message)

    async def _first_sync(self, sync: SyncManager) -> None:
        try:
            report = await sync.sync_now()
            self._log.info("first sync done", entries=report.entries, issued=report.issued)
        except PyspireError as error:
            # Streams are held until the background sync succeeds (or answered UNAVAILABLE);
            # it retries, or revokes on denial.
            self._log.warning(
                "first sync failed; retrying in the background",
                error=str(error),
                error_type=type(error).__name__,
            )

    async def _keep_svids(self, cache: WorkloadCache, store: WorkloadSvidStore) -> None:
        """Write the cache's SVIDs to ``data_dir`` after every change, so a restarted agent
        serves them at once (a burst of changes is written once)."""
        saved: CacheContents | None = None
        async for _ in cache.watch():
            contents = cache.contents()
            if contents == saved or not cache.synced:
                continue
            try:
                await store.save(contents)
            except PyspireError as error:
                self._log.warning("cannot keep workload svids for a restart", error=str(error))
                continue
            saved = contents

    async def _sync(self, sync: SyncManager, identity: NodeIdentity) -> None:
        try:
            await sync.run()
        except PermissionDeniedError as error:
            self._log.error(
                "the server refused this agent; no identities are served", reason=str(error)
            )
            await identity.revoke(str(error))

    async def _follow_bundle(self, cache: WorkloadCache, identity: NodeIdentity) -> None:
        """Keep the agent's own trust (and stored state) on the bundle the sync fetched, so CA
        rotation on the server never strands the agent."""
        async for snapshot in cache.watch():
            if snapshot.bundle is not None and snapshot.bundle != identity.bundle:
                await identity.update_bundle(snapshot.bundle)
