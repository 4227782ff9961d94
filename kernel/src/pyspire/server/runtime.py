"""The server's composition root: builds every subsystem, runs them together, stops them cleanly.

Start order: plugins (datastore first), CA (keys, journal, bundle; credential composers shape
what it signs), the notifiers told of the loaded bundle (any of them may veto the start),
registry cache, the server's own SVID, then the listeners (TCP with TLS for agents, the admin
unix socket); bundle changes then reach notifiers and bundle publishers in the background.
Everything that runs in the background belongs to one task group: the first failure stops the
rest, and a stop request (SIGINT/SIGTERM) drains in-flight calls for a bounded time before
cancelling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import grpclib.server
import structlog

from pyspire.ca.composition import CredentialComposition
from pyspire.ca.manager import CaManager, CaSettings, journal_name
from pyspire.ca.worker_pool import SigningPool
from pyspire.catalog import (
    BUNDLE_PUBLISHERS,
    CREDENTIAL_COMPOSERS,
    DATASTORE,
    NOTIFIERS,
    SERVER_KEY_MANAGER,
    SERVER_NODE_ATTESTORS,
    UPSTREAM_AUTHORITY,
    Catalog,
    Discovery,
    PlannedPlugin,
    Side,
    plan_plugins,
)
from pyspire.catalog.host import host_services_for
from pyspire.collector import SettledFreeze
from pyspire.config import LoadedConfig, ServerConfig
from pyspire.registry.cache import RegistryCache
from pyspire.server.api.admission import AttestationAdmission
from pyspire.server.bundle_feed import BundleFeed, watch_bundle_writes
from pyspire.server.context import ServerContext
from pyspire.server.endpoints import ServerServices, admin_servables, tcp_servables
from pyspire.server.federation.endpoint import serve_bundle_endpoint
from pyspire.server.federation.fetch import BundleFetcher
from pyspire.server.federation.refresh import FederatedBundles
from pyspire.server.identity import ServerIdentity
from pyspire.server.instance import load_server_id
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire.server.join_tokens import DataStoreJoinTokens
from pyspire.server.notifications import BundleNotifications
from pyspire.server.publishing import BundlePublishing
from pyspire.server.readiness import ServerReadiness
from pyspire.server.upstream_bundle import UpstreamBundleFollower
from pyspire.server.upstream_server import UpstreamServers
from pyspire.tasks import Service, run_services
from pyspire.telemetry.audit import AuditLog
from pyspire.telemetry.endpoints import TelemetryEndpoints, serve_telemetry
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire.transport.calls import InFlight
from pyspire.transport.descriptors import connections_within, raise_open_files_limit
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import serve_tcp, serve_unix
from pyspire.transport.tls import RotatingServerContext
from pyspire.transport.unix import ADMIN_DIRECTORY_MODE, ADMIN_SOCKET_MODE, remove_socket
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.files import make_private_directory
from pyspire_sdk.model import JoinToken
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import ChangeSignal, DataStore, WatchableDataStore

SERVER_API_LIMITS = ConnectionLimits(
    max_connections=16384,
    max_unverified_per_address=64,
    handshake_timeout=10.0,
    first_request_timeout=10.0,
    idle_timeout=300.0,
)
"""Connections the TCP listener keeps: one per agent (ten thousand agents and room to spare,
about 1.5 GiB at the memory an agent connection costs). Agents attest over TLS before they
have an SVID, so connections without a client certificate are served, but at most 64 at once
per address."""
ADMIN_API_LIMITS = ConnectionLimits(
    max_connections=256, first_request_timeout=10.0, idle_timeout=300.0
)
"""Connections the admin socket keeps."""
FILES_RESERVE = 512
"""Open files the server needs besides its connections (datastore, logs, plugins)."""
DRAIN_TIMEOUT = 5.0
REGISTRY_REFRESH = timedelta(seconds=1)
PRUNE_INTERVAL = timedelta(hours=1)
CHANGE_EVENT_RETENTION = timedelta(hours=12)


@dataclass(frozen=True)
class _Core:
    """The signing core, started before anything else: the datastore as the server uses it
    (bundle writes watched by ``feed``), the datastore plugin itself (``stored``), the
    credential composers and the CA."""

    datastore: DataStore
    stored: DataStore
    feed: BundleFeed
    composition: CredentialComposition
    ca: CaManager


@dataclass(frozen=True)
class Listening:
    """Where a running server can be reached (the TCP port is known only after bind)."""

    address: str
    port: int
    socket_path: Path


class _LazyJoinTokens:
    """The join-token host service before the datastore exists: node attestors are configured
    after the datastore, and only use the service once the server runs."""

    def __init__(self) -> None:
        self.datastore: DataStore | None = None

    async def consume(self, token: str) -> JoinToken:
        if self.datastore is None:
            raise RuntimeError("the datastore is not configured yet")
        return await DataStoreJoinTokens(self.datastore).consume(token)


class _LazyTrustBundle:
    """The server's own bundle as a host service, before the bundle feed exists: plugins are
    configured before the datastore, and read the bundle only once the server runs. Served from
    the feed's memory, which every write of the bundle through this server updates."""

    def __init__(self) -> None:
        self.feed: BundleFeed | None = None

    async def current_bundle(self) -> Bundle:
        bundle = self.feed.current if self.feed is not None else None
        if bundle is None:
            raise UnavailableError("the server's trust bundle is not loaded yet")
        return bundle


class ServerRuntime:
    """One server process."""

    def __init__(
        self,
        loaded: LoadedConfig[ServerConfig],
        discovery: Discovery,
        *,
        clock: Clock | None = None,
        tcp_limits: ConnectionLimits = SERVER_API_LIMITS,
        admin_limits: ConnectionLimits = ADMIN_API_LIMITS,
        freeze_when_settled: bool = False,
    ) -> None:
        """``freeze_when_settled``: freeze the heap an attestation storm built once the storm
        is over (:class:`pyspire.collector.SettledFreeze`); only the server's own process
        (``pyspire-server run``) asks for it, never a library user's or a test's."""
        self.settings = loaded.settings
        self._tcp_limits = tcp_limits
        self._admin_limits = admin_limits
        self._plugins = loaded.plugins
        self._discovery = discovery
        self._clock = clock or SystemClock()
        self._freeze_when_settled = freeze_when_settled
        self.admission = AttestationAdmission(clock=self._clock)
        self._stop = asyncio.Event()
        self._join_tokens = _LazyJoinTokens()
        self._trust_bundle = _LazyTrustBundle()
        self.metrics = PrometheusMetrics("pyspire_server")
        self.readiness = ServerReadiness(self.settings.trust_domain, self._clock)
        self.telemetry = TelemetryEndpoints()
        self.listening: Listening | None = None
        self.bundle_endpoint_port: int | None = None
        self.federated_bundles: FederatedBundles | None = None
        self.ready = asyncio.Event()
        self._log = structlog.get_logger("pyspire.server")

    def stop(self) -> None:
        """Ask the server to shut down (safe from a signal handler)."""
        self._stop.set()

    def _host_for(self, planned: PlannedPlugin) -> HostServices:
        return host_services_for(
            planned,
            trust_domain=self.settings.trust_domain,
            clock=self._clock,
            metrics=self.metrics,
            data_dir=self.settings.data_dir,
            join_tokens=self._join_tokens,
            trust_bundle=self._trust_bundle,
            upstream_servers=UpstreamServers(self.settings.trust_domain),
        )

    async def run(self) -> None:
        """Run until :meth:`stop`; raises what made start-up fail."""
        settings = self.settings
        self._fit_open_files_limit()
        await asyncio.to_thread(make_private_directory, settings.data_dir, tighten=True)
        plan = plan_plugins(Side.SERVER, self._plugins, self._discovery, path="server.plugins")
        async with (
            serve_telemetry(
                settings.telemetry,
                settings.health_checks,
                metrics=self.metrics,
                checks=self.readiness.checks(),
            ) as self.telemetry,
            Catalog.open(plan, host_for=self._host_for) as catalog,
            signing_pool(settings.signing_processes) as pool,
        ):
            core = await self._start_core(catalog)
            delivery = await self._start_bundle_delivery(catalog, core)
            registry = RegistryCache(core.datastore, settings.trust_domain, self._clock)
            await registry.start()
            identity = await self._start_identity(core)
            context = self._context(catalog, core, registry, identity, pool)
            in_flight = InFlight()
            async with (
                self._federation(core, identity, context) as federation,
                self._listeners(context, identity.tls, in_flight, core.feed),
            ):
                self._log.info(
                    "server started",
                    trust_domain=str(settings.trust_domain),
                    address=self.listening.address if self.listening else "",
                    port=self.listening.port if self.listening else 0,
                    socket_path=str(settings.socket_path),
                )
                self.ready.set()
                self.readiness.serving = True
                await self._run_background(
                    in_flight,
                    {
                        **delivery,
                        **federation,
                        **change_watch(core.stored, registry, core.feed),
                        "ca-rotation": core.ca.run,
                        "registry-refresh": partial(registry.run, self._clock, REGISTRY_REFRESH),
                        "server-svid": identity.run,
                        "prune": partial(self._prune, core.datastore),
                        **self._upstream_bundle(catalog, core),
                        **self._settled_freeze(),
                    },
                )
        self._log.info("server stopped")

    def _fit_open_files_limit(self) -> None:
        """Raise the open-files limit to what the listeners may hold; when the hard limit is
        lower, accept fewer agent connections."""
        reserve = self._admin_limits.max_connections + FILES_RESERVE
        limit = raise_open_files_limit(self._tcp_limits.max_connections + reserve)
        fitted = connections_within(self._tcp_limits, limit, reserve)
        if fitted != self._tcp_limits:
            self._log.warning(
                "open files limit is below the connections the server may keep",
                open_files_limit=limit,
                max_connections=fitted.max_connections,
            )
            self._tcp_limits = fitted

    def _upstream_bundle(self, catalog: Catalog, core: _Core) -> dict[str, Service]:
        """The service appending the upstream authority's bundle updates, when there is one."""
        upstream = catalog.optional(UPSTREAM_AUTHORITY)
        if upstream is None:
            return {}
        follower = UpstreamBundleFollower(
            upstream,
            core.datastore,
            self.settings.trust_domain,
            self._clock,
            on_tainted=core.ca.replace_tainted_upstream,
        )
        return {"upstream-bundle": follower.run}

    async def _start_core(self, catalog: Catalog) -> _Core:
        """The datastore (its bundle writes watched), the credential composers and the CA,
        started: keys made or loaded, the journal read, the bundle stored."""
        settings = self.settings
        stored = catalog.one(DATASTORE)
        self._join_tokens.datastore = stored
        feed = BundleFeed(stored, settings.trust_domain, self._clock)
        self._trust_bundle.feed = feed
        datastore = watch_bundle_writes(stored, settings.trust_domain, feed.wake)
        composition = CredentialComposition(catalog.chain(CREDENTIAL_COMPOSERS))
        ca = CaManager(
            CaSettings(
                trust_domain=settings.trust_domain,
                ca_ttl=settings.ca_ttl,
                x509_key_type=settings.ca_key_type,
                jwt_key_type=settings.effective_jwt_key_type,
                ca_subject=settings.ca_subject,
            ),
            key_manager=catalog.one(SERVER_KEY_MANAGER),
            store=datastore,
            clock=self._clock,
            upstream=catalog.optional(UPSTREAM_AUTHORITY),
            composition=composition,
            metrics=self.metrics,
            journal=journal_name(await load_server_id(settings.data_dir)),
        )
        await ca.start()
        self.readiness.datastore, self.readiness.ca = datastore, ca
        return _Core(datastore=datastore, stored=stored, feed=feed, composition=composition, ca=ca)

    async def _start_bundle_delivery(self, catalog: Catalog, core: _Core) -> dict[str, Service]:
        """Tell the notifiers of the loaded bundle (any may veto the start) and hand it to the
        publishers; the background services that deliver its later changes, by name."""
        notifications = BundleNotifications(
            catalog.chain(NOTIFIERS), clock=self._clock, metrics=self.metrics
        )
        publishing = BundlePublishing(
            catalog.chain(BUNDLE_PUBLISHERS), clock=self._clock, metrics=self.metrics
        )
        loaded = await core.feed.load()
        await notifications.bundle_loaded(loaded)
        core.feed.subscribe(notifications.bundle_updated)
        core.feed.subscribe(publishing.offer)
        publishing.offer(loaded)
        return {
            "bundle-feed": core.feed.run,
            "notifiers": notifications.run,
            "bundle-publishers": publishing.run,
        }

    async def _start_identity(self, core: _Core) -> ServerIdentity:
        """The server's own SVID, minted now and again whenever the CA changes."""
        settings = self.settings
        datastore = core.datastore

        async def current_bundle() -> Bundle | None:
            return await datastore.get_bundle(settings.trust_domain)

        identity = ServerIdentity(
            trust_domain=settings.trust_domain,
            ca=core.ca,
            bundle=current_bundle,
            clock=self._clock,
            tls=RotatingServerContext(),
            ttl=settings.default_x509_svid_ttl,
            composition=core.composition,
        )
        await identity.rotate()
        core.ca.add_listener(identity.ca_changed)
        core.feed.subscribe(identity.bundle_changed)
        return identity

    def _context(
        self,
        catalog: Catalog,
        core: _Core,
        registry: RegistryCache,
        identity: ServerIdentity,
        pool: SigningPool | None,
    ) -> ServerContext:
        """What every API service works with, kept current with the server's own SVID."""
        settings = self.settings
        context = ServerContext(
            trust_domain=settings.trust_domain,
            clock=self._clock,
            datastore=core.datastore,
            ca=core.ca,
            registry=registry,
            issuer=SvidIssuer(
                ca=core.ca,
                clock=self._clock,
                policy=IssuancePolicy(
                    default_x509_svid_ttl=settings.default_x509_svid_ttl,
                    default_jwt_svid_ttl=settings.default_jwt_svid_ttl,
                    agent_ttl=settings.effective_agent_ttl,
                    jwt_issuer=settings.jwt_issuer or "",
                ),
                composition=core.composition,
                metrics=self.metrics,
                pool=pool,
            ),
            node_attestors={
                plugin.name: plugin.instance for plugin in catalog.chain(SERVER_NODE_ATTESTORS)
            },
            started_at=self._clock.now(),
            admin_ids=frozenset(settings.admin_ids),
            server_svid_chain=identity.svid.cert_chain,
            metrics=self.metrics,
        )

        async def keep_svid_chain() -> None:
            context.server_svid_chain = identity.svid.cert_chain
            context.trust_changed()

        core.ca.add_listener(keep_svid_chain)
        core.feed.subscribe(context.trust_changed)
        return context

    @contextlib.asynccontextmanager
    async def _federation(
        self, core: _Core, identity: ServerIdentity, context: ServerContext
    ) -> AsyncIterator[dict[str, Service]]:
        """Federation: the configured relationships stored, their bundles refreshed, and the
        bundle endpoint when ``federation.bundle_endpoint`` is set; the services, by name."""
        config = self.settings.federation
        bundles = FederatedBundles(core.datastore, self._clock, BundleFetcher())
        await bundles.store_static(config.relationships())
        self.federated_bundles = context.federation = bundles
        services: dict[str, Service] = {"federated-bundles": bundles.run}
        if config.bundle_endpoint is None:
            yield services
            return
        async with serve_bundle_endpoint(
            config.bundle_endpoint,
            current=lambda: core.feed.current,
            identity=identity,
            clock=self._clock,
        ) as served:
            self.bundle_endpoint_port = served.port
            yield {**services, **served.services}

    @contextlib.asynccontextmanager
    async def _listeners(
        self,
        context: ServerContext,
        tls: RotatingServerContext,
        in_flight: InFlight,
        feed: BundleFeed,
    ) -> AsyncIterator[None]:
        settings = self.settings
        services = ServerServices.build(context, admission=self.admission)
        audit = AuditLog() if settings.audit_log_enabled else None
        tcp = grpclib.server.Server(
            tcp_servables(services, context, in_flight, limits=self._tcp_limits, audit=audit)
        )
        admin = grpclib.server.Server(
            admin_servables(services, context, in_flight, limits=self._admin_limits, audit=audit)
        )
        listener = await serve_tcp(
            tcp,
            settings.bind_address,
            settings.bind_port,
            tls=tls.listening,
            limits=self._tcp_limits,
            name="server api",
            reuse_port=settings.reuse_port,
            on_unverified_peer=feed.unverified_peer,
        )
        try:
            await serve_unix(
                admin,
                settings.socket_path,
                directory_mode=ADMIN_DIRECTORY_MODE,
                socket_mode=ADMIN_SOCKET_MODE,
                limits=self._admin_limits,
                name="admin api",
            )
            try:
                port = int(listener.sockets[0].getsockname()[1])
                self.listening = Listening(settings.bind_address, port, settings.socket_path)
                yield
            finally:
                await _close(admin)
                await asyncio.to_thread(remove_socket, settings.socket_path)
        finally:
            await _close(tcp)

    async def _run_background(self, in_flight: InFlight, services: Mapping[str, Service]) -> None:
        """Run ``services`` in one task group until :meth:`stop` (or the first failure, which
        cancels the rest and is raised); a stop drains in-flight calls for a bounded time first."""

        async def stopping() -> None:
            self.readiness.serving = False
            self._log.info("server stopping", in_flight=in_flight.count)
            drained = await in_flight.drain(DRAIN_TIMEOUT)
            if not drained:
                self._log.warning("in-flight calls cut short", in_flight=in_flight.count)

        await run_services(services, stop=self._stop, stopping=stopping)

    def _settled_freeze(self) -> dict[str, Service]:
        if not self._freeze_when_settled:
            return {}
        return {"settled-freeze": SettledFreeze(self.admission, self._clock).run}

    async def _prune(self, datastore: DataStore) -> None:
        while True:
            await self._clock.sleep(PRUNE_INTERVAL.total_seconds())
            now = self._clock.now()
            tokens = await datastore.prune_join_tokens(now)
            events = await datastore.prune_change_events(now - CHANGE_EVENT_RETENTION)
            if tokens or events:
                self._log.info("pruned", join_tokens=tokens, change_events=events)


@contextlib.asynccontextmanager
async def signing_pool(processes: int) -> AsyncIterator[SigningPool | None]:
    """The worker processes ``signing_processes`` asks for, started, and stopped and awaited on
    exit; None for 0 (CSR checks in a thread, signing on the event loop)."""
    if processes == 0:
        yield None
        return
    async with SigningPool.running(processes) as pool:
        yield pool


def change_watch(
    datastore: DataStore, registry: RegistryCache, feed: BundleFeed
) -> dict[str, Service]:
    """The service that passes the datastore's change signals on, by name, when the datastore
    offers them (:class:`~pyspire_sdk.plugins.datastore.WatchableDataStore`); none otherwise.
    Changes made through other servers sharing the datastore then reach this one as they
    commit instead of at its next poll: entries and agents to the registry cache, and the
    bundle (another server's new CA, which this server's TLS must trust) to the bundle feed.
    """
    if not isinstance(datastore, WatchableDataStore):
        return {}

    def heard(signal: ChangeSignal) -> None:
        registry.hear(signal)
        feed.wake()

    return {"registry-watch": partial(datastore.watch_changes, heard)}


async def _close(server: grpclib.server.Server) -> None:
    with contextlib.suppress(RuntimeError):
        server.close()
        await server.wait_closed()
