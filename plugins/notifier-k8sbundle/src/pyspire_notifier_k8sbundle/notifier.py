"""The ``k8sbundle`` notifier: on the bundle loaded at start and on every change, the PEM of
the X.509 roots goes to a ConfigMap key and to labelled webhooks' and API services' CA bundles,
in every configured cluster.

The ConfigMap must exist (SPIRE's notifier does not create it); its key is written with a
read-modify-write (:func:`pyspire_sdk.kubernetes.set_config_map_key`). A failure at start
vetoes it, as SPIRE's; a failure on an update is raised for the server to log and retry with
its backoff. Objects created later are given the bundle at the next change or retry (SPIRE
also watches for them).
"""

from __future__ import annotations

__all__ = ["K8sBundleNotifier"]

from dataclasses import dataclass, field

from pyspire_notifier_k8sbundle.cabundles import update_api_services, update_webhooks
from pyspire_notifier_k8sbundle.config import PLUGIN_NAME, K8sBundleConfig, Target
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

    async def close(self) -> None:
        """Close every cluster's client."""
        clusters, self._clusters = self._clusters or [], None
        for cluster in clusters:
            await cluster.client.close()

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
