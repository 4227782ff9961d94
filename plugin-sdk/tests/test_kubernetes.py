"""The SDK's Kubernetes client and config map writes, and the loopback API server's watch
streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pyspire_sdk.errors import PluginError
from pyspire_sdk.kubernetes import KubernetesApiError, KubernetesClient, set_config_map_key
from pyspire_sdk.testing.kubernetes import FakeKubernetesApi


@pytest.fixture
def api() -> FakeKubernetesApi:
    return FakeKubernetesApi()


@pytest_asyncio.fixture
async def client(api: FakeKubernetesApi, tmp_path: Path) -> AsyncIterator[KubernetesClient]:
    async with api.serving(tmp_path) as endpoints:
        connection = KubernetesClient("test", endpoints.kubeconfig)
        await connection.open()
        yield connection
        await connection.close()


def value(api: FakeKubernetesApi) -> str | None:
    found = api.get("configmaps", "ns", "cm")
    return None if found is None else found["data"].get("key")


@pytest.mark.asyncio
async def test_a_missing_config_map_is_created_only_when_asked(
    api: FakeKubernetesApi, client: KubernetesClient
) -> None:
    with pytest.raises(KubernetesApiError, match="HTTP 404") as raised:
        await set_config_map_key(client, "ns", "cm", "key", "v1", create=False)
    assert raised.value.status == 404
    assert await set_config_map_key(client, "ns", "cm", "key", "v1", create=True)
    assert value(api) == "v1"
    assert not await set_config_map_key(client, "ns", "cm", "key", "v1", create=True)
    assert api.patches == []


@pytest.mark.asyncio
async def test_conflicts_are_retried_then_reported(
    api: FakeKubernetesApi, client: KubernetesClient
) -> None:
    api.put("configmaps", "ns", "cm", {"data": {"key": "old"}})
    api.conflict_next = 4
    assert await set_config_map_key(client, "ns", "cm", "key", "new", create=False)
    assert value(api) == "new"
    api.conflict_next = 5
    with pytest.raises(KubernetesApiError, match="HTTP 409"):
        await set_config_map_key(client, "ns", "cm", "key", "newer", create=False)
    assert value(api) == "new"


@pytest.mark.asyncio
async def test_a_changed_kubeconfig_is_read_again(api: FakeKubernetesApi, tmp_path: Path) -> None:
    async with api.serving(tmp_path) as endpoints:
        connection = KubernetesClient("test", endpoints.kubeconfig)
        await connection.open()
        api.credential = "rotated"
        with pytest.raises(KubernetesApiError, match="HTTP 401"):
            await connection.request("GET", "/api/v1/namespaces/ns/configmaps/cm")
        text = endpoints.kubeconfig.read_text()
        endpoints.kubeconfig.write_text(
            text.replace(text.split('"token": "')[1].split('"')[0], "rotated")
        )
        with pytest.raises(KubernetesApiError, match="HTTP 404"):
            await connection.request("GET", "/api/v1/namespaces/ns/configmaps/cm")
        await connection.close()


@pytest.mark.asyncio
async def test_no_kubeconfig_outside_a_cluster_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="test has no kube_config and the server is not in a"):
        await KubernetesClient("test", None, config_key="kube_config").open()


async def watch_lines(client: KubernetesClient, version: str, count: int) -> list[Any]:
    """The first ``count`` events of a watch of labelled validating webhook configurations."""
    api_client = await client.api_client()
    response = await api_client.call_api(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        "GET",
        query_params=[
            ("labelSelector", "l=true"),
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
        ],
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
        _preload_content=False,
    )
    events = []
    async with response:
        assert response.status == 200
        async with asyncio.timeout(5):
            while len(events) < count:
                line = await response.content.readline()
                assert line, "the stream ended"
                events.append(json.loads(line))
    return events


@pytest.mark.asyncio
async def test_watches_stream_the_selector_s_view_of_each_write(
    api: FakeKubernetesApi, client: KubernetesClient
) -> None:
    kind = "validatingwebhookconfigurations"
    api.put(kind, "", "a", {"metadata": {"labels": {"l": "true"}}})
    listed = await client.request(
        "GET", f"/apis/admissionregistration.k8s.io/v1/{kind}", query=[("labelSelector", "l=true")]
    )
    version = listed["metadata"]["resourceVersion"]
    api.put(kind, "", "b", {"metadata": {"labels": {"l": "false"}}})  # not selected: no event
    api.put(kind, "", "b", {"metadata": {"labels": {"l": "true"}}})  # labelled: ADDED
    api.put(kind, "", "a", {"metadata": {"labels": {"l": "true"}}, "webhooks": []})
    api.put(kind, "", "a", {"metadata": {"labels": {}}})  # unlabelled: DELETED
    api.delete(kind, "", "b")
    api.put("configmaps", "ns", "cm", {})  # another kind: only a bookmark says how far it went
    events = await watch_lines(client, version, 5)
    assert [(event["type"], event["object"]["metadata"].get("name")) for event in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
        ("DELETED", "b"),
        ("BOOKMARK", None),
    ]
    assert events[-1]["object"]["metadata"]["resourceVersion"] == str(int(version) + 6)
    api.compact()
    (gone,) = await watch_lines(client, version, 1)
    assert (gone["type"], gone["object"]["code"], gone["object"]["reason"]) == (
        "ERROR",
        410,
        "Expired",
    )
