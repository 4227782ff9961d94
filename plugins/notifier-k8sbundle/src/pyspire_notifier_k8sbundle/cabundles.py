"""The CA bundles of labelled admission webhook configurations and API services, as SPIRE's
k8sbundle patches them.

Objects labelled ``<label>=true`` are listed; each whose CA bundle differs is patched with a
strategic merge patch carrying the resource version read (webhooks merged by name, with the
fields the API server requires of each), and a 409 Conflict reads the object again and
retries. An object that fails does not stop the others: the failures are returned, named.
:func:`labelled_collections` names what a cluster's labels select, for the watch of
:mod:`pyspire_notifier_k8sbundle.watch`; :func:`update_object` gives one object the bundle.
"""

from __future__ import annotations

__all__ = [
    "Collection",
    "PatchFor",
    "ca_bundle_of",
    "labelled_collections",
    "update_api_services",
    "update_object",
    "update_webhooks",
]

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.kubernetes import STRATEGIC_MERGE_PATCH, KubernetesApiError, KubernetesClient

_ADMISSION = "/apis/admissionregistration.k8s.io/v1"
_API_SERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
_WEBHOOK_KINDS = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
_CONFLICT_ATTEMPTS = 5
_WEBHOOK_FIELDS = ("name", "admissionReviewVersions", "sideEffects")

PatchFor = Callable[[dict[str, Any], str], dict[str, Any] | None]
"""The patch giving an object the CA bundle (base64 text), or ``None`` when it has it."""


def _webhooks_patch(found: dict[str, Any], ca_bundle: str) -> dict[str, Any] | None:
    webhooks = found.get("webhooks") or []
    if all((hook.get("clientConfig") or {}).get("caBundle") == ca_bundle for hook in webhooks):
        return None
    patched = []
    for hook in webhooks:
        kept = {key: hook[key] for key in _WEBHOOK_FIELDS if key in hook}
        patched.append({**kept, "clientConfig": {"caBundle": ca_bundle}})
    version = found["metadata"].get("resourceVersion", "")
    return {"metadata": {"resourceVersion": version}, "webhooks": patched}


def _api_service_patch(found: dict[str, Any], ca_bundle: str) -> dict[str, Any] | None:
    spec = found.get("spec") or {}
    if spec.get("caBundle") == ca_bundle:
        return None
    kept = {key: spec[key] for key in ("groupPriorityMinimum", "versionPriority") if key in spec}
    version = found["metadata"].get("resourceVersion", "")
    return {"metadata": {"resourceVersion": version}, "spec": {**kept, "caBundle": ca_bundle}}


@dataclass(frozen=True)
class Collection:
    """Objects labelled ``<label>=true`` at ``path``, and how one is given a CA bundle."""

    path: str
    label: str
    patch_for: PatchFor


def labelled_collections(webhook_label: str, api_service_label: str) -> list[Collection]:
    """What a cluster's labels select (none for an unset label)."""
    collections = []
    if webhook_label:
        for kind in _WEBHOOK_KINDS:
            collections.append(Collection(f"{_ADMISSION}/{kind}", webhook_label, _webhooks_patch))
    if api_service_label:
        collections.append(Collection(_API_SERVICES, api_service_label, _api_service_patch))
    return collections


def ca_bundle_of(pem: str) -> str:
    """The CA bundle field's value for ``pem``: its base64 text."""
    return base64.b64encode(pem.encode()).decode("ascii")


async def update_object(
    client: KubernetesClient, path: str, found: dict[str, Any], ca_bundle: str, patch_for: PatchFor
) -> None:
    """Give the object ``found`` at ``path`` the CA bundle (base64 text), unless it holds it;
    a 409 Conflict reads it again and retries."""
    for attempt in range(_CONFLICT_ATTEMPTS):
        patch = patch_for(found, ca_bundle)
        if patch is None:
            return
        try:
            await client.request("PATCH", path, body=patch, content_type=STRATEGIC_MERGE_PATCH)
            return
        except KubernetesApiError as error:
            if error.status != 409 or attempt == _CONFLICT_ATTEMPTS - 1:
                raise
        found = await client.request("GET", path)


async def _update_listed(
    client: KubernetesClient, collection: str, label: str, pem: str, patch_for: PatchFor
) -> list[str]:
    ca_bundle = ca_bundle_of(pem)
    try:
        listed = await client.request("GET", collection, query=[("labelSelector", f"{label}=true")])
    except UnavailableError as error:
        return [str(error)]
    failures = []
    for item in listed.get("items") or []:
        path = f"{collection}/{item['metadata']['name']}"
        try:
            await update_object(client, path, item, ca_bundle, patch_for)
        except UnavailableError as error:
            failures.append(str(error))
    return failures


async def update_webhooks(client: KubernetesClient, label: str, pem: str) -> list[str]:
    """Give the validating and mutating webhook configurations labelled ``label=true`` the CA
    bundle ``pem``; returns the failures."""
    failures = []
    for kind in _WEBHOOK_KINDS:
        failures += await _update_listed(
            client, f"{_ADMISSION}/{kind}", label, pem, _webhooks_patch
        )
    return failures


async def update_api_services(client: KubernetesClient, label: str, pem: str) -> list[str]:
    """Give the API services labelled ``label=true`` the CA bundle ``pem``; returns the
    failures."""
    return await _update_listed(client, _API_SERVICES, label, pem, _api_service_patch)
