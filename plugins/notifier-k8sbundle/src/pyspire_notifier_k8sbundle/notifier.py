"""The ``k8sbundle`` notifier: on the bundle loaded at start and on every change, the PEM of
the X.509 roots goes to a ConfigMap key and to labelled webhooks' and API services' CA bundles,
in every configured cluster.

The ConfigMap must exist (SPIRE's notifier does not create it); its key is written with a
read-modify-write (:func:`pyspire_sdk.kubernetes.set_config_map_key`). A failure at start
vetoes it, as SPIRE's; a failure on an update is raised for the server to log and retry with
its backoff.

As SPIRE's, the notifier also watches the labelled webhook configurations and API services of
every cluster (:mod:`pyspire_notifier_k8sbundle.watch`), so an object created labelled, or
labelled later, gets the current bundle at once rather than at the next change. The watches
run under one task the notifier owns from ``configure`` to ``close``, which cancels and awaits
them. As SPIRE's, an object seen without the current bundle is patched, also when another
writer put its own CA bundle back; its own patch comes back as a ``MODIFIED`` event that finds
the object holding the bundle and is left alone, so the watch makes no patch of its own accord.
"""

from __future__ import annotations

__all__ = ["K8sBundleNotifier"]

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from pyspire_notifier_k8sbundle.cabundles import (
    Collection,
    ca_bundle_of,
    labelled_collections,
    update_api_services,
    update_object,
    update_webhooks,
)
from pyspire_notifier_k8sbundle.config import PLUGIN_NAME, K8sBundleConfig, Target
from pyspire_notifier_k8sbundle.watch import LabelledWatch, Seen
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import PluginError, UnavailableError
from pyspire_sdk.kubernetes import KubernetesClient, set_config_map_key
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.notifier import BundleLoaded, BundleUpdated, NotifierEvent


@dataclass
class _Cluster:
    target: Target
    client: KubernetesClient = field(repr=False)


class K8sBundleNotifier:
    """A :class:`~pyspire_sdk.plugins.notifier.Notifier` writing CA bundles to Kubernetes."""

    def __init__(self) -> None:
        self._clusters: list[_Cluster] | None = None
        self._ca_bundle: str | None = None
        self._watching: asyncio.Task[None] | None = None
        self._logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()

    async def configure(self, config: K8sBundleConfig, host: HostServices) -> None:
        """Build a client per cluster now, so an unusable kubeconfig stops the start."""
        clusters = [
            _Cluster(
                target,
                KubernetesClient(
                    f"{PLUGIN_NAME}: cluster {index}",
                    target.kube_config_file_path,
                    config_key="kube_config_file_path",
                ),
            )
            for index, target in enumerate(config.targets())
        ]
        try:
            for cluster in clusters:
                await cluster.client.open()
        except BaseException:
            for cluster in clusters:
                await cluster.client.close()
            raise
        await self.close()
        self._clusters = clusters
        logger = self._logger = host.logger.bind(notifier=PLUGIN_NAME)
        watches = [
            LabelledWatch(
                cluster.client,
                collection,
                self._seen_by(cluster, collection),
                host.clock,
                logger.bind(cluster=index),
            )
            for index, cluster in enumerate(clusters)
            for collection in labelled_collections(
                cluster.target.webhook_label, cluster.target.api_service_label
            )
        ]
        if watches:
            self._watching = asyncio.create_task(_run_all(watches, logger))

    async def close(self) -> None:
        """Cancel and await the watches, then close every cluster's client."""
        watching, self._watching = self._watching, None
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        clusters, self._clusters = self._clusters or [], None
        for cluster in clusters:
            await cluster.client.close()

    def _seen_by(self, cluster: _Cluster, collection: Collection) -> Seen:
        async def seen(found: dict[str, Any]) -> None:
            ca_bundle = self._ca_bundle
            if ca_bundle is None or collection.patch_for(found, ca_bundle) is None:
                return  # no bundle yet, or the object holds it: left alone
            path = f"{collection.path}/{(found.get('metadata') or {}).get('name', '')}"
            try:
                await update_object(cluster.client, path, found, ca_bundle, collection.patch_for)
            except UnavailableError as error:
                self._logger.warning(
                    "could not give a watched object the bundle", path=path, error=str(error)
                )

        return seen

    async def notify_and_advise(self, event: NotifierEvent) -> None:
        """Push the bundle loaded at start; a failure refuses the start."""
        if isinstance(event, BundleLoaded):
            await self._push(event.bundle)

    async def notify(self, event: NotifierEvent) -> None:
        """Push a changed bundle; a failure is retried by the server."""
        if isinstance(event, BundleUpdated):
            await self._push(event.bundle)

    async def _push(self, bundle: Bundle) -> None:
        clusters = self._clusters
        if clusters is None:
            raise PluginError("notifier is not configured")
        pem = bundle.to_pem()
        ca_bundle = ca_bundle_of(pem)
        self._ca_bundle = ca_bundle
        failures: list[str] = []
        for cluster in clusters:
            failures += await self._push_to(cluster, pem)
        if failures:
            raise UnavailableError("; ".join(failures))

    @staticmethod
    async def _push_to(cluster: _Cluster, pem: str) -> list[str]:
        target, client = cluster.target, cluster.client
        failures: list[str] = []
        try:
            await set_config_map_key(
                client,
                target.namespace,
                target.config_map,
                target.config_map_key,
                pem,
                create=False,
            )
        except UnavailableError as error:
            failures.append(str(error))
        if target.webhook_label:
            failures += await update_webhooks(client, target.webhook_label, pem)
        if target.api_service_label:
            failures += await update_api_services(client, target.api_service_label, pem)
        return failures


async def _run_all(
    watches: list[LabelledWatch], logger: structlog.typing.FilteringBoundLogger
) -> None:
    """Run every watch in one task group: cancelling this task cancels and awaits them all."""
    try:
        async with asyncio.TaskGroup() as group:
            for watch in watches:
                group.create_task(watch.run())
    except Exception as error:  # a watch never raises; a bug is logged, not lost
        logger.error("bundle watches stopped", error=repr(error))
