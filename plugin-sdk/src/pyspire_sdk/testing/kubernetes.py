"""A loopback Kubernetes API server (HTTPS, bearer token) holding config maps, admission
webhook configurations and API services, for the tests of plugins that write CA bundles there.

It speaks the published shapes: ``GET``/``PATCH`` of
``/api/v1/namespaces/{ns}/configmaps/{name}`` and ``POST`` to create one; list (with a
``labelSelector`` of ``key=value``), ``GET`` and ``PATCH`` of
``/apis/admissionregistration.k8s.io/v1/{validating,mutating}webhookconfigurations`` and
``/apis/apiregistration.k8s.io/v1/apiservices``. Patches are strategic merge patches (lists of
named objects merged by ``name``); one carrying a stale ``metadata.resourceVersion`` gets 409
Conflict, as the API server answers. The lists of webhook configurations and API services
carry a ``metadata.resourceVersion`` and are watched with ``?watch=true`` from it: a stream of
``{"type": ..., "object": ...}`` lines (``ADDED``, ``MODIFIED``, ``DELETED`` as an object
starts, goes on or stops matching the selector; a ``BOOKMARK`` after each batch when
``allowWatchBookmarks`` is asked; an ``ERROR`` with a 410 ``Status`` when the version asked is
older than :meth:`FakeKubernetesApi.compact` kept). :meth:`FakeKubernetesApi.drop_watches`
cuts every open stream, as a lost connection; objects may be written from another thread than
the server's (:meth:`serving_in_thread`). Errors are ``Status`` objects::

    api = FakeKubernetesApi()
    api.put("configmaps", "spire", "spire-bundle", {"data": {}})
    async with api.serving(tmp_path) as kube:
        ...  # kube.kubeconfig for the plugin; api.get(...) to look at what it wrote
"""

from __future__ import annotations

__all__ = ["FakeKubernetesApi", "FakeKubernetesEndpoints"]

import asyncio
import contextlib
import copy
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.loopback import Handler, LoopbackServer, LoopbackThread, serve_loopback
from pyspire_sdk.testing.pki import TestAuthority

_ADMISSION = "/apis/admissionregistration.k8s.io/v1"
_APIREGISTRATION = "/apis/apiregistration.k8s.io/v1"
_KINDS = {
    "configmaps": ("ConfigMap", "v1"),
    "validatingwebhookconfigurations": (
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
    ),
    "mutatingwebhookconfigurations": (
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
    ),
    "apiservices": ("APIService", "apiregistration.k8s.io/v1"),
}


@dataclass(frozen=True)
class FakeKubernetesEndpoints:
    """Where the fake listens: its URL and a kubeconfig file for it."""

    url: str
    kubeconfig: Path


def _status(code: int, reason: str, message: str) -> web.Response:
    body: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
    }
    body.update({"message": message, "reason": reason, "code": code})
    return web.json_response(body, status=code)


def _matches(stored: dict[str, Any] | None, key: str, value: str) -> bool:
    if stored is None:
        return False
    return not key or (stored["metadata"].get("labels") or {}).get(key) == value


def _transition(
    old: dict[str, Any] | None, new: dict[str, Any] | None, key: str, value: str
) -> tuple[str, dict[str, Any]] | None:
    """The watch event a selector sees for a write, as the API server sends it."""
    before, after = _matches(old, key, value), _matches(new, key, value)
    if after and new is not None:
        return ("MODIFIED" if before else "ADDED"), new
    if before and old is not None:
        return "DELETED", new if new is not None else old
    return None


_DISCONNECT_POLL = 0.05
"""Seconds between a watch stream's looks at whether its client has gone."""


@dataclass
class _OpenWatch:
    woken: asyncio.Event
    loop: asyncio.AbstractEventLoop
    dropped: bool = False

    def wake(self) -> None:
        """Wake the stream, from any thread."""
        with contextlib.suppress(RuntimeError):  # its loop has closed
            self.loop.call_soon_threadsafe(self.woken.set)


def _merge(target: Any, patch: Any) -> Any:
    """A strategic merge of ``patch`` into ``target`` for the fields these objects have."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = _merge(target[key], value) if key in target else value
        return merged
    if isinstance(target, list) and isinstance(patch, list):
        named = all(isinstance(item, dict) and "name" in item for item in target + patch)
        if named:
            merged_list = list(target)
            positions = {item["name"]: index for index, item in enumerate(merged_list)}
            for item in patch:
                if item["name"] in positions:
                    index = positions[item["name"]]
                    merged_list[index] = _merge(merged_list[index], item)
                else:
                    merged_list.append(item)
            return merged_list
    return patch


class FakeKubernetesApi:
    """The API server's side: objects by (resource, namespace, name), each with a resource
    version that every write moves on."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.credential = secrets.token_urlsafe(24)
        """The bearer token the kubeconfig gives the plugin."""
        self.fail_next = 0
        """How many of the next requests are answered 503, as an API server that is down."""
        self.conflict_next = 0
        """How many of the next patches are answered 409, as when another writer won."""
        self.patches: list[tuple[str, str, str]] = []
        self.watches = 0
        """How many watch streams were opened."""
        self._version = 0
        self._events: list[tuple[int, str, dict[str, Any] | None, dict[str, Any] | None]] = []
        self._compacted = 0
        self._open: list[_OpenWatch] = []

    def _record(
        self, resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        self._events.append((self._version, resource, old, new))
        for watch in list(self._open):
            watch.wake()

    def put(self, resource: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store an object (``namespace`` is ``""`` for cluster-wide resources)."""
        kind, api_version = _KINDS[resource]
        stored = copy.deepcopy(body)
        metadata = stored.setdefault("metadata", {})
        metadata["name"] = name
        if namespace:
            metadata["namespace"] = namespace
        self._version += 1
        metadata["resourceVersion"] = str(self._version)
        stored.update({"kind": kind, "apiVersion": api_version})
        old = self.objects.get((resource, namespace, name))
        self.objects[(resource, namespace, name)] = stored
        self._record(resource, old, stored)
        return stored

    def delete(self, resource: str, namespace: str, name: str) -> None:
        """Remove an object, as ``kubectl delete``."""
        old = self.objects.pop((resource, namespace, name))
        self._version += 1
        self._record(resource, old, None)

    @property
    def watching(self) -> int:
        """How many watch streams are open now."""
        return len(self._open)

    def compact(self) -> None:
        """Forget the history so far: a watch from an older resource version is answered
        410 Gone (``Expired``), as after the API server's compaction."""
        self._compacted = self._version
        self._events.clear()

    def drop_watches(self) -> None:
        """Cut every open watch stream without ending it, as a lost connection."""
        for watch in list(self._open):
            watch.dropped = True
            watch.wake()

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or ``None``."""
        return self.objects.get((resource, namespace, name))

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.credential}":
            return _status(401, "Unauthorized", "Unauthorized")
        if self.fail_next:
            self.fail_next -= 1
            return _status(503, "ServiceUnavailable", "the server is unavailable")
        return None

    async def _get(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        resource, namespace, name = self._key(request)
        found = self.get(resource, namespace, name)
        if found is None:
            return _status(404, "NotFound", f'{resource} "{name}" not found')
        return web.json_response(found)

    async def _create(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        namespace = request.match_info["namespace"]
        body = await request.json()
        name = str((body.get("metadata") or {}).get("name") or "")
        if self.get("configmaps", namespace, name) is not None:
            return _status(409, "AlreadyExists", f'configmaps "{name}" already exists')
        return web.json_response(self.put("configmaps", namespace, name, body), status=201)

    async def _patch(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        if request.content_type != "application/strategic-merge-patch+json":
            return _status(415, "UnsupportedMediaType", f"{request.content_type} is not served")
        resource, namespace, name = self._key(request)
        found = self.get(resource, namespace, name)
        if found is None:
            return _status(404, "NotFound", f'{resource} "{name}" not found')
        patch = await request.json()
        asked = (patch.get("metadata") or {}).get("resourceVersion")
        if self.conflict_next or (asked and asked != found["metadata"]["resourceVersion"]):
            self.conflict_next = max(0, self.conflict_next - 1)
            return _status(409, "Conflict", "the object has been modified")
        self.patches.append((resource, namespace, name))
        return web.json_response(self.put(resource, namespace, name, _merge(found, patch)))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refused(request)) is not None:
            return refused
        resource = request.match_info["resource"]
        selector = request.query.get("labelSelector", "")
        key, _, value = selector.partition("=")
        if request.query.get("watch") in ("1", "true"):
            return await self._watch(request, resource, key, value)
        items = [
            stored
            for (kind, _, _), stored in sorted(self.objects.items())
            if kind == resource and _matches(stored, key, value)
        ]
        kind, api_version = _KINDS[resource]
        metadata = {"resourceVersion": str(self._version)}
        return web.json_response(
            {"kind": f"{kind}List", "apiVersion": api_version, "metadata": metadata, "items": items}
        )

    async def _watch(
        self, request: web.Request, resource: str, key: str, value: str
    ) -> web.StreamResponse:
        asked = request.query.get("resourceVersion", "")
        if not asked.isdigit():
            return _status(400, "BadRequest", "a watch needs the resourceVersion of a list")
        self.watches += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if int(asked) < self._compacted:
            gone: dict[str, object] = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
            gone.update({"status": "Failure", "reason": "Expired", "code": 410})
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            await response.write_eof()
            return response
        kind, api_version = _KINDS[resource]
        bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true")
        position = int(asked)
        watch = _OpenWatch(asyncio.Event(), asyncio.get_running_loop())
        self._open.append(watch)
        try:
            while not watch.dropped:
                watch.woken.clear()
                lines = []
                for version, changed, old, new in list(self._events):
                    if version <= position or changed != resource:
                        continue
                    position = version
                    if (event := _transition(old, new, key, value)) is not None:
                        lines.append({"type": event[0], "object": event[1]})
                if bookmarks and position < self._version:
                    position = self._version
                    mark = {"resourceVersion": str(position)}
                    bookmark = {"kind": kind, "apiVersion": api_version, "metadata": mark}
                    lines.append({"type": "BOOKMARK", "object": bookmark})
                for line in lines:
                    await response.write(json.dumps(line).encode() + b"\n")
                while not watch.woken.is_set():
                    if request.transport is None or request.transport.is_closing():
                        return response  # the client went away
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(watch.woken.wait(), _DISCONNECT_POLL)
        finally:
            self._open.remove(watch)
        if request.transport is not None:
            request.transport.close()
        return response

    @staticmethod
    def _key(request: web.Request) -> tuple[str, str, str]:
        info = request.match_info
        return info.get("resource", "configmaps"), info.get("namespace", ""), info["name"]

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The API server's routes."""
        configmap = "/api/v1/namespaces/{namespace}/configmaps/{name}"
        admission = _ADMISSION + "/{resource:(validating|mutating)webhookconfigurations}"
        apiservices = _APIREGISTRATION + "/{resource:apiservices}"
        return [
            ("GET", configmap, self._get),
            ("PATCH", configmap, self._patch),
            ("POST", "/api/v1/namespaces/{namespace}/configmaps", self._create),
            ("GET", admission, self._list),
            ("GET", admission + "/{name}", self._get),
            ("PATCH", admission + "/{name}", self._patch),
            ("GET", apiservices, self._list),
            ("GET", apiservices + "/{name}", self._get),
            ("PATCH", apiservices + "/{name}", self._patch),
        ]

    def write_kubeconfig(self, path: Path, server: LoopbackServer) -> Path:
        """A kubeconfig (JSON is YAML) for ``server``: its CA file and the bearer token."""
        assert server.ca_file is not None
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {"server": server.url, "certificate-authority": str(server.ca_file)},
                }
            ],
            "users": [{"name": "spire-server", "user": {"token": self.credential}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "spire-server"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(document, indent=2))
        path.chmod(0o600)
        return path

    @contextlib.asynccontextmanager
    async def serving(self, directory: Path) -> AsyncIterator[FakeKubernetesEndpoints]:
        """Serve on loopback until the block ends; TLS files and the kubeconfig go to
        ``directory``."""
        authority = TestAuthority(TrustDomain("kubernetes.test"))
        async with serve_loopback(self.routes(), tls=authority, directory=directory) as server:
            kubeconfig = self.write_kubeconfig(directory / "kubeconfig", server)
            try:
                yield FakeKubernetesEndpoints(url=server.url, kubeconfig=kubeconfig)
            finally:
                self.drop_watches()  # so the server stops without waiting for open streams

    @contextlib.contextmanager
    def serving_in_thread(self, directory: Path) -> Iterator[FakeKubernetesEndpoints]:
        """:meth:`serving` for synchronous callers (end-to-end tests)."""
        authority = TestAuthority(TrustDomain("kubernetes.test"))
        with LoopbackThread(self.routes(), tls=authority, directory=directory) as server:
            kubeconfig = self.write_kubeconfig(directory / "kubeconfig", server)
            try:
                yield FakeKubernetesEndpoints(url=server.url, kubeconfig=kubeconfig)
            finally:
                self.drop_watches()
