"""Reading the kubelet's PodList and turning a pod into SPIRE's ``k8s`` selector values.

Only the fields SPIRE reads are looked at; each is checked for its JSON type, so a malformed
list fails the attestation naming the field instead of yielding selectors from a guess.
"""

from __future__ import annotations

__all__ = ["ContainerStatus", "Pod", "container_selectors", "parse_pod_list", "pod_selectors"]

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire_sdk.errors import UnavailableError


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """One entry of ``status.containerStatuses`` (or ``initContainerStatuses``)."""

    name: str
    image: str
    image_id: str
    container_id: str
    """The runtime's ID without its scheme (``containerd://<id>`` gives ``<id>``)."""


@dataclass(frozen=True, slots=True)
class Pod:
    """What the selectors are made of."""

    uid: str
    name: str
    namespace: str
    service_account: str
    node_name: str
    labels: Mapping[str, str]
    owners: tuple[tuple[str, str, str], ...]
    """``(kind, name, uid)`` of each owner reference."""
    containers: tuple[ContainerStatus, ...]
    init_containers: tuple[ContainerStatus, ...]

    def container(self, container_id: str) -> ContainerStatus | None:
        """The (init) container with runtime ID ``container_id``, if the pod lists it."""
        for status in (*self.containers, *self.init_containers):
            if status.container_id and status.container_id == container_id:
                return status
        return None


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnavailableError(f"kubelet pod list: {field} is not an object")
    return value


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UnavailableError(f"kubelet pod list: {field} is not a string")
    return value


def _items(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UnavailableError(f"kubelet pod list: {field} is not an array")
    return value


def _runtime_id(text: str) -> str:
    """The host part of ``<runtime>://<id>``, as SPIRE takes it with a URL parser."""
    _, separator, rest = text.partition("://")
    return rest.split("/", 1)[0] if separator else ""


def _statuses(value: Any, field: str) -> tuple[ContainerStatus, ...]:
    statuses = []
    for index, item in enumerate(_items(value, field)):
        where = f"{field}[{index}]"
        entry = _object(item, where)
        statuses.append(
            ContainerStatus(
                name=_text(entry.get("name"), f"{where}.name"),
                image=_text(entry.get("image"), f"{where}.image"),
                image_id=_text(entry.get("imageID"), f"{where}.imageID"),
                container_id=_runtime_id(_text(entry.get("containerID"), f"{where}.containerID")),
            )
        )
    return tuple(statuses)


def _pod(item: Any, where: str) -> Pod:
    document = _object(item, where)
    metadata = _object(document.get("metadata"), f"{where}.metadata")
    spec = _object(document.get("spec"), f"{where}.spec")
    status = _object(document.get("status"), f"{where}.status")
    labels = _object(metadata.get("labels"), f"{where}.metadata.labels")
    owners = []
    for index, owner in enumerate(_items(metadata.get("ownerReferences"), f"{where}.owners")):
        reference = _object(owner, f"{where}.metadata.ownerReferences[{index}]")
        owners.append(
            tuple(
                _text(reference.get(key), f"ownerReferences.{key}")
                for key in ("kind", "name", "uid")
            )
        )
    return Pod(
        uid=_text(metadata.get("uid"), f"{where}.metadata.uid"),
        name=_text(metadata.get("name"), f"{where}.metadata.name"),
        namespace=_text(metadata.get("namespace"), f"{where}.metadata.namespace"),
        service_account=_text(spec.get("serviceAccountName"), f"{where}.spec.serviceAccountName"),
        node_name=_text(spec.get("nodeName"), f"{where}.spec.nodeName"),
        labels={key: _text(value, f"{where}.metadata.labels") for key, value in labels.items()},
        owners=tuple((kind, name, uid) for kind, name, uid in owners),
        containers=_statuses(status.get("containerStatuses"), f"{where}.status.containerStatuses"),
        init_containers=_statuses(
            status.get("initContainerStatuses"), f"{where}.status.initContainerStatuses"
        ),
    )


def parse_pod_list(document: Any) -> tuple[Pod, ...]:
    """The pods of a decoded ``PodList`` (``{"kind": "PodList", "items": [...]}``)."""
    items = _items(_object(document, "the response").get("items"), "items")
    return tuple(_pod(item, f"items[{index}]") for index, item in enumerate(items))


def _images(*statuses: ContainerStatus) -> list[str]:
    """Image names and image IDs of ``statuses``, each once, as SPIRE's set of them."""
    return list(
        dict.fromkeys(text for status in statuses for text in (status.image_id, status.image))
    )


def pod_selectors(pod: Pod) -> list[str]:
    """The pod-level values SPIRE reports for every process of ``pod``."""
    values = [
        f"sa:{pod.service_account}",
        f"ns:{pod.namespace}",
        f"node-name:{pod.node_name}",
        f"pod-uid:{pod.uid}",
        f"pod-name:{pod.name}",
        f"pod-image-count:{len(pod.containers)}",
        f"pod-init-image-count:{len(pod.init_containers)}",
    ]
    values += [f"pod-image:{image}" for image in _images(*pod.containers)]
    values += [f"pod-init-image:{image}" for image in _images(*pod.init_containers)]
    values += [f"pod-label:{key}:{value}" for key, value in pod.labels.items()]
    for kind, name, uid in pod.owners:
        values += [f"pod-owner:{kind}:{name}", f"pod-owner-uid:{kind}:{uid}"]
    return values


def container_selectors(status: ContainerStatus) -> list[str]:
    """The values of the caller's own container."""
    return [f"container-name:{status.name}"] + [
        f"container-image:{image}" for image in _images(status)
    ]
