"""The settings of ``k8sbundle``, with SPIRE's keys and defaults.

The top-level keys describe one cluster (the "root" cluster) and ``clusters`` lists more, each
with the same keys and its own ``kube_config_file_path``. As in SPIRE, the root cluster is used
when any of its keys is set or when ``clusters`` is empty; its unset names take SPIRE's
defaults (namespace ``spire``, ConfigMap ``spire-bundle``, key ``bundle.crt``).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CONFIG_MAP",
    "DEFAULT_CONFIG_MAP_KEY",
    "DEFAULT_NAMESPACE",
    "PLUGIN_NAME",
    "ClusterConfig",
    "K8sBundleConfig",
    "Target",
]

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.config import setting
from pyspire_sdk.errors import ConfigIssue

PLUGIN_NAME = "k8sbundle"
"""How operators name the notifier: ``[server.plugins.notifier.k8sbundle]``."""

DEFAULT_NAMESPACE = "spire"
DEFAULT_CONFIG_MAP = "spire-bundle"
DEFAULT_CONFIG_MAP_KEY = "bundle.crt"

_NAMESPACE = "the namespace of the ConfigMap (default `spire`)"
_CONFIG_MAP = "the name of the ConfigMap (default `spire-bundle`)"
_CONFIG_MAP_KEY = "the key of the ConfigMap that holds the bundle (default `bundle.crt`)"
_WEBHOOK_LABEL = (
    "a label: validating and mutating webhook configurations labelled `<label>=true` get the "
    "bundle as the CA bundle of every webhook"
)
_API_SERVICE_LABEL = (
    "a label: API services labelled `<label>=true` get the bundle as their CA bundle"
)


@dataclass(frozen=True)
class Target:
    """One cluster's resolved settings: defaults applied."""

    namespace: str
    config_map: str
    config_map_key: str
    webhook_label: str
    api_service_label: str
    kube_config_file_path: Path | None


def _name_issues(values: dict[str, str | None]) -> Iterable[ConfigIssue]:
    for key, value in values.items():
        if value is not None and not value.strip():
            yield ConfigIssue(key, "must not be empty")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """One more cluster."""

    kube_config_file_path: Path = setting(description="the kubeconfig file to reach it with")
    namespace: str | None = setting(None, description=_NAMESPACE)
    config_map: str | None = setting(None, description=_CONFIG_MAP)
    config_map_key: str | None = setting(None, description=_CONFIG_MAP_KEY)
    webhook_label: str = setting("", description=_WEBHOOK_LABEL)
    api_service_label: str = setting("", description=_API_SERVICE_LABEL)

    def validate(self) -> Iterable[ConfigIssue]:
        """Names, when set, must not be empty."""
        yield from _name_issues(
            {
                "namespace": self.namespace,
                "config_map": self.config_map,
                "config_map_key": self.config_map_key,
            }
        )

    def target(self) -> Target:
        """The settings with SPIRE's defaults applied."""
        return Target(
            self.namespace or DEFAULT_NAMESPACE,
            self.config_map or DEFAULT_CONFIG_MAP,
            self.config_map_key or DEFAULT_CONFIG_MAP_KEY,
            self.webhook_label,
            self.api_service_label,
            self.kube_config_file_path,
        )


@dataclass(frozen=True, kw_only=True)
class K8sBundleConfig:
    """Settings of the ``k8sbundle`` notifier."""

    namespace: str | None = setting(None, description=_NAMESPACE)
    config_map: str | None = setting(None, description=_CONFIG_MAP)
    config_map_key: str | None = setting(None, description=_CONFIG_MAP_KEY)
    webhook_label: str = setting("", description=_WEBHOOK_LABEL)
    api_service_label: str = setting("", description=_API_SERVICE_LABEL)
    kube_config_file_path: Path | None = setting(
        None,
        description="the kubeconfig file to reach the cluster with; unset means the in-cluster "
        "service account",
    )
    clusters: tuple[ClusterConfig, ...] = setting(
        (), description="more clusters, each with its own `kube_config_file_path`"
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """Names, when set, must not be empty."""
        yield from _name_issues(
            {
                "namespace": self.namespace,
                "config_map": self.config_map,
                "config_map_key": self.config_map_key,
            }
        )

    def _root_is_set(self) -> bool:
        return any(
            (
                self.namespace,
                self.config_map,
                self.config_map_key,
                self.webhook_label,
                self.api_service_label,
                self.kube_config_file_path,
            )
        )

    def targets(self) -> list[Target]:
        """Every cluster to update, the root one first when it is used."""
        targets = [cluster.target() for cluster in self.clusters]
        if self._root_is_set() or not targets:
            root = Target(
                self.namespace or DEFAULT_NAMESPACE,
                self.config_map or DEFAULT_CONFIG_MAP,
                self.config_map_key or DEFAULT_CONFIG_MAP_KEY,
                self.webhook_label,
                self.api_service_label,
                self.kube_config_file_path,
            )
            targets.insert(0, root)
        return targets
