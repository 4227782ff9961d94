"""The server half of ``k8s_psat``: have the cluster review the token, then read its pod and
node.

The payload names a cluster of ``clusters`` and carries the token. The cluster's API server
reviews it (TokenReview, for the cluster's ``audience``; the answer must confirm one of them)
and says whose it is: the service account (``system:serviceaccount:<ns>:<name>``, which must
be on ``service_account_allow_list`` as ``<ns>:<name>``) and the pod it is bound to. The pod
must still have that UID; its node gives the agent ID
``k8s_psat/<cluster>/<node UID>`` (or ``k8s_psat/<cluster>/pod/<pod UID>`` with
``use_pod_uid_for_agent_id``) and, with the pod, the selectors. As in SPIRE, the agent may
attest again (``can_reattest``): its token is rotated by the kubelet.
"""

from __future__ import annotations

__all__ = ["ClusterConfig", "ServerK8sPsatAttestor", "ServerK8sPsatConfig"]

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyspire_nodeattestor_k8s_psat.apiserver import KubernetesApi, TokenReviewStatus
from pyspire_nodeattestor_k8s_psat.names import PLUGIN_NAME, POD_NAME_KEY, POD_UID_KEY
from pyspire_sdk.config import setting
from pyspire_sdk.errors import (
    ConfigIssue,
    InvalidArgumentError,
    PermissionDeniedError,
    PluginError,
    UnavailableError,
)
from pyspire_sdk.model import AttestationResult
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import Challenger, agent_id

MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """One cluster whose agents may attest (SPIRE's keys)."""

    service_account_allow_list: tuple[str, ...] = setting(
        description="service accounts allowed to attest, as <namespace>:<name>"
    )
    audience: tuple[str, ...] = setting(
        ("spire-server",),
        description="audiences the token is reviewed for; empty: the API server's own",
    )
    kube_config_file: str = setting(
        "",
        description="kubeconfig file to reach the API server; empty: the in-cluster configuration",
    )
    allowed_node_label_keys: tuple[str, ...] = setting(
        (), description="node label keys that become `agent_node_label` selectors"
    )
    allowed_pod_label_keys: tuple[str, ...] = setting(
        (), description="pod label keys that become `agent_pod_label` selectors"
    )
    use_pod_uid_for_agent_id: bool = setting(
        False,
        description="name the agent by its pod's UID (k8s_psat/<cluster>/pod/<pod UID>) "
        "instead of its node's",
    )

    def validate(self) -> Iterable[ConfigIssue]:
        """At least one service account."""
        if not self.service_account_allow_list:
            yield ConfigIssue(
                "service_account_allow_list", "must allow at least one service account"
            )


@dataclass(frozen=True, kw_only=True)
class ServerK8sPsatConfig:
    """The server half's settings (SPIRE's keys)."""

    clusters: dict[str, ClusterConfig] = setting(
        default_factory=dict,
        description="clusters whose agents may attest, by a name of your choice; empty: none",
    )


class ServerK8sPsatAttestor:
    """Verifies projected service account tokens through each cluster's TokenReview API."""

    def __init__(self) -> None:
        self._host: HostServices | None = None
        self._clusters: dict[str, tuple[ClusterConfig, KubernetesApi]] = {}

    async def configure(self, config: ServerK8sPsatConfig, host: HostServices) -> None:
        """Build each cluster's client (a kubeconfig that cannot be used fails here)."""
        self._host = host
        if not config.clusters:
            host.logger.info("no clusters configured; k8s_psat attestation is disabled")
        for name, cluster in config.clusters.items():
            api = KubernetesApi(name, cluster.kube_config_file)
            self._clusters[name] = (cluster, api)
            await api.open()

    async def close(self) -> None:
        """Close every cluster's client."""
        for _, api in self._clusters.values():
            await api.close()

    async def attest(self, payload: bytes, challenge: Challenger) -> AttestationResult:
        """Review the token in ``payload``; the agent ID and selectors it grants."""
        if self._host is None:
            raise PluginError("k8s_psat: used before configure")
        cluster_name, token = _parse(payload)
        found = self._clusters.get(cluster_name)
        if found is None:
            raise InvalidArgumentError(f'not configured for cluster "{cluster_name}"')
        cluster, api = found
        status = await api.review_token(token, cluster.audience)
        _check_review(status, cluster.audience, cluster_name)
        namespace, account = _names(status, cluster_name)
        if f"{namespace}:{account}" not in cluster.service_account_allow_list:
            raise PermissionDeniedError(
                f'"{namespace}:{account}" is not an allowed service account for cluster '
                f'"{cluster_name}"'
            )
        pod_name = _single_extra(status, POD_NAME_KEY, "pod name", cluster_name)
        pod_uid = _single_extra(status, POD_UID_KEY, "pod UID", cluster_name)
        pod = await api.pod(namespace, pod_name)
        if pod.uid != pod_uid:
            raise PermissionDeniedError(
                f'pod UID mismatch for pod "{pod_name}" in cluster "{cluster_name}": token bound '
                f'to pod UID "{pod_uid}"'
            )
        if not pod.node_name:
            raise PermissionDeniedError(f'pod "{pod_name}" is not scheduled on a node')
        node = await api.node(pod.node_name)
        if not node.uid:
            raise UnavailableError(f'node UID is empty for cluster "{cluster_name}"')
        values = [
            f"cluster:{cluster_name}",
            f"agent_ns:{namespace}",
            f"agent_sa:{account}",
            f"agent_pod_name:{pod_name}",
            f"agent_pod_uid:{pod_uid}",
            f"agent_node_ip:{pod.host_ip}",
            f"agent_node_name:{pod.node_name}",
            f"agent_node_uid:{node.uid}",
        ]
        values += [
            f"agent_node_label:{key}:{value}"
            for key, value in sorted(node.labels.items())
            if key in cluster.allowed_node_label_keys
        ]
        values += [
            f"agent_pod_label:{key}:{value}"
            for key, value in sorted(pod.labels.items())
            if key in cluster.allowed_pod_label_keys
        ]
        suffix = ("pod", pod_uid) if cluster.use_pod_uid_for_agent_id else (node.uid,)
        try:
            agent = agent_id(self._host.trust_domain, PLUGIN_NAME, cluster_name, *suffix)
        except InvalidArgumentError as error:
            raise PermissionDeniedError(f"cannot make the agent ID: {error}") from None
        return AttestationResult(agent_id=agent, selector_values=tuple(values), can_reattest=True)


def _parse(payload: bytes) -> tuple[str, str]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgumentError(f"attestation data is longer than {MAX_PAYLOAD_BYTES} bytes")
    try:
        data: Any = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgumentError("failed to unmarshal data payload: not JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgumentError("failed to unmarshal data payload: not a JSON object")
    cluster, token = data.get("cluster"), data.get("token")
    if not isinstance(cluster, str) or not cluster:
        raise InvalidArgumentError("missing cluster in attestation data")
    if not isinstance(token, str) or not token:
        raise InvalidArgumentError("missing token in attestation data")
    return cluster, token


def _check_review(status: TokenReviewStatus, audiences: Sequence[str], cluster: str) -> None:
    if not status.authenticated:
        reason = f": {status.error}" if status.error else ""
        raise PermissionDeniedError(
            f'token not authenticated according to TokenReview API for cluster "{cluster}"' + reason
        )
    if audiences and not set(audiences) & set(status.audiences):
        raise PermissionDeniedError(
            f'token review API did not validate audience for cluster "{cluster}": wanted one '
            f"of {json.dumps(list(audiences))} but got {json.dumps(list(status.audiences))}"
        )


def _names(status: TokenReviewStatus, cluster: str) -> tuple[str, str]:
    parts = status.username.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"] or not all(parts[2:]):
        raise PermissionDeniedError(
            f'token review of cluster "{cluster}" names no service account '
            f"(username {status.username!r})"
        )
    return parts[2], parts[3]


def _single_extra(status: TokenReviewStatus, key: str, meaning: str, cluster: str) -> str:
    values = status.extra.get(key, ())
    if len(values) != 1 or not values[0]:
        raise PermissionDeniedError(
            f'token review of cluster "{cluster}" names no single {meaning} (is the token a '
            "projected one, bound to a pod?)"
        )
    return values[0]
