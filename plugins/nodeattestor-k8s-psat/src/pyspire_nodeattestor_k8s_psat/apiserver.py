"""The three Kubernetes API calls ``k8s_psat`` makes, through kubernetes_asyncio.

SPIRE's ``apiserver.Client``: create a TokenReview (``authentication.k8s.io/v1``), read a pod,
read a node. The client (the SDK's :mod:`pyspire_sdk.kubernetes`) comes from
``kube_config_file`` (or the in-cluster configuration when it is empty) and is built again when
the file changes, so rotated credentials are picked up as SPIRE picks them up by reloading it.
kubernetes_asyncio is imported only when a cluster is configured: it is a large package,
and an agent or a server without ``k8s_psat`` configured should not pay for it.

Every call is bounded by :data:`CALL_TIMEOUT`; failures raise
:class:`~pyspire_sdk.errors.UnavailableError` naming the call and the HTTP status, never the
response body (a TokenReview answer repeats the token).
"""

from __future__ import annotations

__all__ = ["CALL_TIMEOUT", "KubernetesApi", "Node", "Pod", "TokenReviewStatus"]

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.kubernetes import KubernetesClient

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

CALL_TIMEOUT = 10.0
"""Seconds each API call may take."""


@dataclass(frozen=True)
class TokenReviewStatus:
    """What the API server concluded about a token."""

    authenticated: bool
    username: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class Pod:
    """The pod fields selectors and checks use."""

    uid: str
    node_name: str
    host_ip: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Node:
    """The node fields selectors use."""

    uid: str
    labels: Mapping[str, str]


class KubernetesApi:
    """One cluster's API server, reached through the SDK's
    :class:`~pyspire_sdk.kubernetes.KubernetesClient` (kubeconfig read again when it changes,
    or the in-cluster account)."""

    def __init__(self, cluster: str, kube_config_file: str) -> None:
        self._cluster = cluster
        self._connection = KubernetesClient(
            f"k8s_psat: cluster {cluster!r}",
            Path(kube_config_file) if kube_config_file else None,
            config_key="kube_config_file",
        )

    async def open(self) -> None:
        """Build the client now, so a configuration that cannot work fails at start."""
        await self._connection.open()

    async def close(self) -> None:
        """Close the client's connections."""
        await self._connection.close()

    async def _api_client(self) -> ApiClient:
        client: ApiClient = await self._connection.api_client()
        return client

    async def _call(self, what: str, call: Any) -> Any:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await asyncio.wait_for(call, CALL_TIMEOUT)
        except ApiException as error:
            raise UnavailableError(
                f"{what} for cluster {self._cluster!r} failed: HTTP {error.status} {error.reason}"
            ) from None
        except TimeoutError:
            raise UnavailableError(
                f"{what} for cluster {self._cluster!r} timed out after {CALL_TIMEOUT:g}s"
            ) from None
        except OSError as error:
            raise UnavailableError(
                f"{what} for cluster {self._cluster!r} failed: {type(error).__name__}"
            ) from None

    async def review_token(self, token: str, audiences: Sequence[str]) -> TokenReviewStatus:
        """Create a TokenReview of ``token`` for ``audiences`` (none: the API server's)."""
        from kubernetes_asyncio import client

        api = client.AuthenticationV1Api(await self._api_client())
        body = client.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=client.V1TokenReviewSpec(token=token, audiences=list(audiences) or None),
        )
        review = await self._call("TokenReview", api.create_token_review(body))
        status = review.status
        if status is None:
            return TokenReviewStatus(authenticated=False, error="the review has no status")
        user = status.user
        extra = (user.extra or {}) if user is not None else {}
        return TokenReviewStatus(
            authenticated=bool(status.authenticated),
            username=(user.username or "") if user is not None else "",
            extra={key: list(value or ()) for key, value in extra.items()},
            audiences=tuple(status.audiences or ()),
            error=status.error or "",
        )

    async def pod(self, namespace: str, name: str) -> Pod:
        """Read the pod ``namespace``/``name``."""
        from kubernetes_asyncio import client

        api = client.CoreV1Api(await self._api_client())
        found = await self._call("reading the pod", api.read_namespaced_pod(name, namespace))
        metadata, spec, status = found.metadata, found.spec, found.status
        return Pod(
            uid=(metadata.uid or "") if metadata else "",
            node_name=(spec.node_name or "") if spec else "",
            host_ip=(status.host_ip or "") if status else "",
            labels=dict((metadata.labels or {}) if metadata else {}),
        )

    async def node(self, name: str) -> Node:
        """Read the node ``name``."""
        from kubernetes_asyncio import client

        api = client.CoreV1Api(await self._api_client())
        found = await self._call("reading the node", api.read_node(name))
        metadata = found.metadata
        return Node(
            uid=(metadata.uid or "") if metadata else "",
            labels=dict((metadata.labels or {}) if metadata else {}),
        )
