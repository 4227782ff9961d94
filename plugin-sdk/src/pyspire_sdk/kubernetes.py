"""A Kubernetes API client for plugins that read and patch objects, through kubernetes_asyncio.

:class:`KubernetesClient` is one cluster's API server, reached with a kubeconfig file (read
again when it changes, so rotated credentials are picked up) or, without one, the in-cluster
service account. Requests and answers are the JSON shapes the Kubernetes API publishes (dicts),
so a plugin patches exactly the fields it means to and a test server speaks the same shapes.

kubernetes_asyncio is imported when a client is opened: it is a large package, and a server
that loads a Kubernetes plugin without configuring it should not pay for it. It is not a
dependency of the SDK; plugins using this module depend on ``kubernetes_asyncio`` themselves.

Every request is bounded by :data:`CALL_TIMEOUT`. An HTTP error answer raises
:class:`KubernetesApiError` with its status (404, 409 ...); an unreachable server or a timeout
raises :class:`~pyspire_sdk.errors.UnavailableError`. Messages name the request and the
status, never the answer's body nor the credential.
"""

from __future__ import annotations

__all__ = [
    "CALL_TIMEOUT",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "KubernetesApiError",
    "KubernetesClient",
    "set_config_map_key",
]

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyspire_sdk.errors import PluginError, UnavailableError

CALL_TIMEOUT = 10.0
"""Seconds each API request may take."""

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
"""The content type of a strategic merge patch (lists merged by their merge key)."""

MERGE_PATCH = "application/merge-patch+json"
"""The content type of a JSON merge patch (RFC 7386)."""

_MAX_BODY = 8 * 1024 * 1024
_CONFLICT_ATTEMPTS = 5
"""Read-modify-write rounds tried when another writer keeps changing the object."""


class KubernetesApiError(UnavailableError):
    """The API server answered a request with an error status (``status``: 404, 409 ...)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _read_kube_config(path: Path) -> Any:
    import yaml  # type: ignore[import-untyped]  # kubernetes_asyncio's own dependency

    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


class KubernetesClient:
    """One cluster's API server; ``name`` says whose it is in errors (``"k8sbundle: cluster
    0"``) and ``config_key`` how the plugin's settings name the kubeconfig file."""

    def __init__(
        self, name: str, kube_config_file: Path | None, *, config_key: str = "kubeconfig"
    ) -> None:
        self._name = name
        self._key = config_key
        self._path = kube_config_file
        self._client: Any = None
        self._loaded_mtime: float | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Build the client now, so a configuration that cannot work fails at start
        (:class:`~pyspire_sdk.errors.PluginError` with the reason)."""
        await self._api_client()

    async def close(self) -> None:
        """Close the client's connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def api_client(self) -> Any:
        """The kubernetes_asyncio ``ApiClient``, built again when the kubeconfig file changed,
        for plugins that call the typed API classes (``CoreV1Api(await c.api_client())``)."""
        return await self._api_client()

    async def _api_client(self) -> Any:
        async with self._lock:
            if self._path is None:
                if self._client is None:
                    self._client = await self._in_cluster()
                return self._client
            path = self._path
            try:
                mtime = await asyncio.to_thread(lambda: os.stat(path).st_mtime)
            except OSError as error:
                if self._client is not None:
                    return self._client
                raise PluginError(
                    f"{self._name}: {self._key} {str(path)!r} cannot be read: {error.strerror}"
                ) from None
            if self._client is None or mtime != self._loaded_mtime:
                fresh = await self._from_file(path)
                if self._client is not None:
                    await self._client.close()
                self._client, self._loaded_mtime = fresh, mtime
            return self._client

    async def _from_file(self, path: Path) -> Any:
        import yaml
        from kubernetes_asyncio import config
        from kubernetes_asyncio.config import ConfigException

        unusable = (OSError, ValueError, TypeError, AttributeError, ConfigException, yaml.YAMLError)
        try:
            document = await asyncio.to_thread(_read_kube_config, path)
            return await config.new_client_from_config_dict(config_dict=document)
        except unusable as error:
            raise PluginError(
                f"{self._name}: {self._key} {str(path)!r} is not usable: {error}"
            ) from None

    async def _in_cluster(self) -> Any:
        from kubernetes_asyncio import client, config
        from kubernetes_asyncio.config import ConfigException

        configuration = client.Configuration()
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except ConfigException as error:
            raise PluginError(
                f"{self._name} has no {self._key} and the server is not in a cluster: {error}"
            ) from None
        return client.ApiClient(configuration)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Send ``method path`` (``/api/v1/namespaces/spire/configmaps/x``) with ``body`` as
        JSON and return the decoded answer."""
        import aiohttp

        what = f"{method} {path}"
        api_client = await self._api_client()
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                response = await api_client.call_api(
                    path,
                    method,
                    query_params=list(query),
                    header_params=headers,
                    body=dict(body) if body is not None else None,
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                )
                async with response:
                    data = await response.content.read(_MAX_BODY)
                    status, reason = response.status, response.reason
        except TimeoutError:
            raise UnavailableError(
                f"{self._name}: {what} timed out after {CALL_TIMEOUT:g}s"
            ) from None
        except (OSError, aiohttp.ClientError) as error:
            raise UnavailableError(f"{self._name}: {what} failed: {type(error).__name__}") from None
        if not 200 <= status <= 299:
            raise KubernetesApiError(f"{self._name}: {what} failed: HTTP {status} {reason}", status)
        try:
            answer = json.loads(data)
        except ValueError:
            raise UnavailableError(f"{self._name}: {what} answered with invalid JSON") from None
        if not isinstance(answer, dict):
            raise UnavailableError(f"{self._name}: {what} answered with no object")
        return answer


async def set_config_map_key(
    client: KubernetesClient,
    namespace: str,
    name: str,
    key: str,
    value: str,
    *,
    create: bool,
) -> bool:
    """Make ``key`` of the config map ``namespace``/``name`` hold ``value``; returns whether it
    was written (``False`` when it already held it).

    A read-modify-write: the patch carries the resource version read, so a write made by
    another server in between is answered 409 and the round starts again (a few times). A
    missing config map is created when ``create`` is set, else the 404
    :class:`KubernetesApiError` is raised.
    """
    path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
    for attempt in range(_CONFLICT_ATTEMPTS):
        try:
            found = await client.request("GET", path)
        except KubernetesApiError as error:
            if error.status != 404 or not create:
                raise
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": {key: value},
            }
            try:
                await client.request(
                    "POST", f"/api/v1/namespaces/{namespace}/configmaps", body=body
                )
            except KubernetesApiError as created:
                if created.status != 409 or attempt == _CONFLICT_ATTEMPTS - 1:
                    raise
                continue
            return True
        if (found.get("data") or {}).get(key) == value:
            return False
        version = (found.get("metadata") or {}).get("resourceVersion", "")
        patch = {"metadata": {"resourceVersion": version}, "data": {key: value}}
        try:
            await client.request("PATCH", path, body=patch, content_type=STRATEGIC_MERGE_PATCH)
        except KubernetesApiError as error:
            if error.status != 409 or attempt == _CONFLICT_ATTEMPTS - 1:
                raise
            continue
        return True
    raise AssertionError("unreachable")  # pragma: no cover
