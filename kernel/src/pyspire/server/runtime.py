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
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpclib.server
import structlog

from pyspire.ca.composition import CredentialComposition
from pyspire.ca.manager import CaManager, CaSettings
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
from pyspire.config import LoadedConfig, ServerConfig
from pyspire.registry.cache import RegistryCache
from pyspire.server.bundle_feed import BundleFeed, watch_bundle_writes
from pyspire.server.context import ServerContext
from pyspire.server.endpoints import ServerServices, admin_servables, tcp_servables
from pyspire.server.identity import ServerIdentity
from pyspire.server.issuer import IssuancePolicy, SvidIssuer
from pyspire.server.join_tokens import DataStoreJoinTokens
from pyspire.server.notifications import BundleNotifications
from pyspire.server.publishing import BundlePublishing
from pyspire.server.readiness import ServerReadiness
from pyspire.telemetry.audit import AuditLog
from pyspire.telemetry.endpoints import TelemetryEndpoints, serve_telemetry
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire.transport.calls import InFlight
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.listener import serve_tcp, serve_unix
from pyspire.transport.tls import RotatingServerContext
from pyspire.transport.unix import ADMIN_DIRECTORY_MODE, ADMIN_SOCKET_MODE, remove_socket
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.files import make_private_directory
from pyspire_sdk.model import JoinToken
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.datastore import DataStore

SERVER_API_LIMITS = ConnectionLimits(
    max_connections=4096,
    max_unverified_per_address=64,
    handshake_timeout=10.0,
    first_request_timeout=10.0,
    idle_timeout=300.0,
)
"""Connections the TCP listener keeps. Agents attest over TLS before they have an SVID, so
connections without a client certificate are served, but at most 64 at once per address."""
ADMIN_API_LIMITS = ConnectionLimits(
    max_connections=256, first_request_timeout=10.0, idle_timeout=300.0
)
"""Connections the admin socket keeps."""
DRAIN_TIMEOUT = 5.0
REGISTRY_REFRESH = timedelta(seconds=1)
PRUNE_INTERVAL = timedelta(hours=1)
CHANGE_EVENT_RETENTION = timedelta(hours=12)


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
    ) -> None:
        self.settings = loaded.settings
        self._tcp_limits = tcp_limits
        self._admin_limits = admin_limits
        self._plugins = loaded.plugins
        self._discovery = discovery
        self._clock = clock or SystemClock()
        self._stop = asyncio.Event()
        self._join_tokens = _LazyJoinTokens()
        self.metrics = PrometheusMetrics("pyspire_server")
        self.readiness = ServerReadiness(self.settings.trust_domain, self._clock)
        self.telemetry = TelemetryEndpoints()
        self.listening: Listening | None = None
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
        )

    async def run(self) -> None:
        """Run until :meth:`stop`; raises what made start-up fail."""
        settings = self.settings
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
        ):
            stored = catalog.one(DATASTORE)
            self._join_tokens.datastore = stored
            bundles = BundleFeed(stored, settings.trust_domain, self._clock)
            datastore = watch_bundle_writes(stored, settings.trust_domain, bundles.wake)
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
            )
            await ca.start()
            self.readiness.datastore, self.readiness.ca = datastore, ca
            notifications = BundleNotifications(
                catalog.chain(NOTIFIERS), clock=self._clock, metrics=self.metrics
            )
            publishing = BundlePublishing(
                catalog.chain(BUNDLE_PUBLISHERS), clock=self._clock, metrics=self.metrics
            )
            loaded_bundle = await bundles.load()
            await notifications.bundle_loaded(loaded_bundle)
            bundles.subscribe(notifications.bundle_updated)
            bundles.subscribe(publishing.offer)
            publishing.offer(loaded_bundle)
            registry = RegistryCache(datastore, settings.trust_domain, self._clock)
            await registry.start()
            tls = RotatingServerContext()

            async def current_bundle() -> Bundle | None:
                return await datastore.get_bundle(settings.trust_domain)

            identity = ServerIdentity(
                trust_domain=settings.trust_domain,
                ca=ca,
                bundle=current_bundle,
                clock=self._clock,
                tls=tls,
                ttl=settings.default_x509_svid_ttl,
                composition=composition,
            )
            await identity.rotate()
            ca.add_listener(identity.ca_changed)
            context = ServerContext(
                trust_domain=settings.trust_domain,
                clock=self._clock,
                datastore=datastore,
                ca=ca,
                registry=registry,
                issuer=SvidIssuer(
                    ca=ca,
                    clock=self._clock,
                    policy=IssuancePolicy(
                        default_x509_svid_ttl=settings.default_x509_svid_ttl,
                        default_jwt_svid_ttl=settings.default_jwt_svid_ttl,
                        agent_ttl=settings.effective_agent_ttl,
                        jwt_issuer=settings.jwt_issuer or "",
                    ),
                    composition=composition,
                    metrics=self.metrics,
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

            ca.add_listener(keep_svid_chain)
            in_flight = InFlight()
            async with self._listeners(context, tls, in_flight):
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
                    ca,
                    registry,
                    identity,
                    datastore,
                    in_flight,
                    bundle_services={
                        "bundle-feed": bundles.run,
                        "notifiers": notifications.run,
                        "bundle-publishers": publishing.run,
                    },
                )
        self._log.info("server stopped")

    @contextlib.asynccontextmanager
    async def _listeners(
        self, context: ServerContext, tls: RotatingServerContext, in_flight: InFlight
    ) -> AsyncIterator[None]:
        settings = self.settings
        services = ServerServices.build(context)
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

    async def _run_background(
        self,
        ca: CaManager,
        registry: RegistryCache,
        identity: ServerIdentity,
        datastore: DataStore,
        in_flight: InFlight,
        bundle_services: Mapping[str, Callable[[], Coroutine[Any, Any, None]]],
    ) -> None:
        async with asyncio.TaskGroup() as group:
            tasks = [
                *(group.create_task(run(), name=name) for name, run in bundle_services.items()),
                group.create_task(ca.run(), name="ca-rotation"),
                group.create_task(
                    registry.run(self._clock, REGISTRY_REFRESH), name="registry-refresh"
                ),
                group.create_task(identity.run(), name="server-svid"),
                group.create_task(self._prune(datastore), name="prune"),
            ]
            await self._stop.wait()
            self.readiness.serving = False
            self._log.info("server stopping", in_flight=in_flight.count)
            drained = await in_flight.drain(DRAIN_TIMEOUT)
            if not drained:
                self._log.warning("in-flight calls cut short", in_flight=in_flight.count)
            for task in tasks:
                task.cancel()

    async def _prune(self, datastore: DataStore) -> None:
        while True:
            await self._clock.sleep(PRUNE_INTERVAL.total_seconds())
            now = self._clock.now()
            tokens = await datastore.prune_join_tokens(now)
            events = await datastore.prune_change_events(now - CHANGE_EVENT_RETENTION)
            if tokens or events:
                self._log.info("pruned", join_tokens=tokens, change_events=events)


async def _close(server: grpclib.server.Server) -> None:
    with contextlib.suppress(RuntimeError):
        server.close()
        await server.wait_closed()
