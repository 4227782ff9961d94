"""The ``k8s_configmap`` bundle publisher: the trust bundle in a key of a ConfigMap, in every
configured cluster, with SPIRE's keys.

Each publish is a read-modify-write per cluster (:func:`pyspire_sdk.kubernetes.set_config_map_key`):
a ConfigMap that is missing is created, one that already holds the bundle is left alone, and a
write racing another server's is done again on the fresh object. A cluster that fails does not
stop the others; the publish then fails naming it, and the server retries it with its backoff
(clusters already up to date are not written again). kubernetes_asyncio is imported when the
plugin is configured, not when it is loaded.
"""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "ClusterConfig", "K8sConfigMapConfig", "K8sConfigMapPublisher"]

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.bundle_formats import BundleFormat, encode_bundle
from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue, PluginError, UnavailableError
from pyspire_sdk.kubernetes import KubernetesClient, set_config_map_key
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.bundle_publisher import PublishedBundleMemo

PLUGIN_NAME = "k8s_configmap"
"""How operators name the publisher: ``[server.plugins.bundle_publisher.k8s_configmap]``."""


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """Where the bundle goes in one cluster."""

    namespace: str = setting(description="the namespace of the ConfigMap")
    configmap_name: str = setting(description="the name of the ConfigMap")
    configmap_key: str = setting(description="the key of the ConfigMap that holds the bundle")
    format: BundleFormat = setting(
        description="`spiffe` (SPIFFE bundle document), `jwks` (plain JWK Set of X.509 and JWT "
        "authorities) or `pem` (X.509 authorities only)"
    )
    kubeconfig_path: Path | None = setting(
        None,
        description="the kubeconfig file to reach the cluster with; unset means the in-cluster "
        "service account",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """Names must not be empty."""
        for key in ("namespace", "configmap_name", "configmap_key"):
            if not getattr(self, key).strip():
                yield ConfigIssue(key, "must not be empty")


@dataclass(frozen=True, kw_only=True)
class K8sConfigMapConfig:
    """Settings of the ``k8s_configmap`` bundle publisher."""

    clusters: dict[str, ClusterConfig] = setting(
        default_factory=dict,
        description="the clusters to publish to, keyed by a name of your choice; with none, "
        "nothing is published",
    )


@dataclass
class _Cluster:
    name: str
    config: ClusterConfig
    client: KubernetesClient = field(repr=False)


class K8sConfigMapPublisher:
    """A :class:`~pyspire_sdk.plugins.bundle_publisher.BundlePublisher` writing ConfigMaps."""

    def __init__(self) -> None:
        self._clusters: list[_Cluster] | None = None
        self._memo = PublishedBundleMemo()

    async def configure(self, config: K8sConfigMapConfig, host: HostServices) -> None:
        """Build a client per cluster now, so an unusable kubeconfig stops the start."""
        clusters = [
            _Cluster(
                name,
                cluster,
                KubernetesClient(
                    f"{PLUGIN_NAME}: cluster {name!r}",
                    cluster.kubeconfig_path,
                    config_key="kubeconfig_path",
                ),
            )
            for name, cluster in sorted(config.clusters.items())
        ]
        try:
            for cluster in clusters:
                await cluster.client.open()
        except BaseException:
            for cluster in clusters:
                await cluster.client.close()
            raise
        if not clusters:
            host.logger.warning("no cluster is configured: the bundle is not published")
        await self.close()
        self._memo.forget()
        self._clusters = clusters

    async def close(self) -> None:
        """Close every cluster's client."""
        clusters, self._clusters = self._clusters or [], None
        for cluster in clusters:
            await cluster.client.close()

    async def publish_bundle(self, bundle: Bundle) -> None:
        """Put ``bundle`` in every cluster's ConfigMap, unless it is the one published last."""
        clusters = self._clusters
        if clusters is None:
            raise PluginError("bundle publisher is not configured")
        async with self._memo.publishing(bundle) as changed:
            if not changed:
                return
            failures = []
            for cluster in clusters:
                try:
                    await self._publish_to(cluster, bundle)
                except UnavailableError as error:
                    failures.append(str(error))
            if failures:
                raise UnavailableError("; ".join(failures))

    @staticmethod
    async def _publish_to(cluster: _Cluster, bundle: Bundle) -> None:
        config = cluster.config
        value = encode_bundle(bundle, config.format).decode()
        await set_config_map_key(
            cluster.client,
            config.namespace,
            config.configmap_name,
            config.configmap_key,
            value,
            create=True,
        )
