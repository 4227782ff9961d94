"""``k8s_configmap`` against a loopback API server speaking the Kubernetes shapes: the SDK's
contract suite, creation and patching with the resource version, conflicts, failures and
their retry, several clusters, and the settings' checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pyspire_bundlepublisher_k8s_configmap import (
    PLUGIN_NAME,
    K8sConfigMapConfig,
    K8sConfigMapPublisher,
)
from pyspire_bundlepublisher_k8s_configmap.plugin import pyspire_bundle_publishers

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.bundle_publisher import BundlePublisher
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import TestAuthority
from pyspire_sdk.testing.bundle_publisher_contract import BundlePublisherContract, ReadPublished
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.kubernetes import FakeKubernetesApi, FakeKubernetesEndpoints
from pyspire_sdk.testing.readme import assert_readme_documents

TD = TrustDomain("example.org")
README = Path(__file__).resolve().parents[1] / "README.md"


def cluster(kubeconfig: Path, **more: object) -> dict[str, object]:
    return {
        "namespace": "spire",
        "configmap_name": "example.org",
        "configmap_key": "bundle",
        "format": "spiffe",
        "kubeconfig_path": str(kubeconfig),
        **more,
    }


async def configured(host: HostServices, **clusters: dict[str, object]) -> K8sConfigMapPublisher:
    config = load_config(K8sConfigMapConfig, {"clusters": clusters}, path=PLUGIN_NAME)
    publisher = K8sConfigMapPublisher()
    await publisher.configure(config, host)
    return publisher


def stored(api: FakeKubernetesApi, name: str = "example.org", key: str = "bundle") -> str | None:
    found = api.get("configmaps", "spire", name)
    return None if found is None else (found.get("data") or {}).get(key)


@pytest.fixture
def api() -> FakeKubernetesApi:
    return FakeKubernetesApi()


@pytest_asyncio.fixture
async def kube(api: FakeKubernetesApi, tmp_path: Path) -> AsyncIterator[FakeKubernetesEndpoints]:
    async with api.serving(tmp_path) as endpoints:
        yield endpoints


@pytest.fixture
def bundle() -> Bundle:
    return TestAuthority(TD).bundle(sequence_number=2)


class TestK8sConfigMapPublisher(BundlePublisherContract):
    @pytest_asyncio.fixture
    async def bundle_publisher(
        self, host_services: HostServices, kube: FakeKubernetesEndpoints
    ) -> AsyncIterator[K8sConfigMapPublisher]:
        publisher = await configured(host_services, one=cluster(kube.kubeconfig))
        yield publisher
        await publisher.close()

    @pytest.fixture
    def read_published(self, api: FakeKubernetesApi) -> ReadPublished:
        async def read() -> bytes | None:
            value = stored(api)
            return None if value is None else value.encode()

        return read


@pytest.mark.asyncio
async def test_an_existing_config_map_is_patched_keeping_its_other_keys(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    bundle: Bundle,
) -> None:
    api.put("configmaps", "spire", "example.org", {"data": {"other": "kept"}})
    publisher = await configured(host_services, one=cluster(kube.kubeconfig, format="pem"))
    await publisher.publish_bundle(bundle)
    assert stored(api) == bundle.to_pem()
    assert stored(api, key="other") == "kept"
    assert api.patches == [("configmaps", "spire", "example.org")]
    await publisher.close()


@pytest.mark.asyncio
async def test_a_conflicting_write_is_done_again_on_the_fresh_object(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    bundle: Bundle,
) -> None:
    api.put("configmaps", "spire", "example.org", {"data": {}})
    api.conflict_next = 2
    publisher = await configured(host_services, one=cluster(kube.kubeconfig, format="pem"))
    await publisher.publish_bundle(bundle)
    assert stored(api) == bundle.to_pem()
    await publisher.close()


@pytest.mark.asyncio
async def test_an_unavailable_cluster_fails_the_publish_and_the_retry_writes_it(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    tmp_path: Path,
    bundle: Bundle,
) -> None:
    other = FakeKubernetesApi()
    (tmp_path / "other").mkdir()
    async with other.serving(tmp_path / "other") as second:
        publisher = await configured(
            host_services,
            first=cluster(kube.kubeconfig, format="pem"),
            second=cluster(second.kubeconfig, format="pem"),
        )
        other.fail_next = 1
        with pytest.raises(UnavailableError, match=r"cluster 'second': GET .* HTTP 503"):
            await publisher.publish_bundle(bundle)
        assert stored(api) == bundle.to_pem()  # the first cluster was not held up
        await publisher.publish_bundle(bundle)
        assert stored(other) == bundle.to_pem()
        assert api.patches == []  # created once, not written again by the retry
        await publisher.close()


@pytest.mark.asyncio
async def test_an_unusable_kubeconfig_stops_the_start(
    host_services: HostServices, tmp_path: Path
) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: [")
    with pytest.raises(PluginError, match=r"cluster 'one': kubeconfig_path .* is not usable"):
        await configured(host_services, one=cluster(broken))
    with pytest.raises(PluginError, match="cannot be read"):
        await configured(host_services, one=cluster(tmp_path / "absent"))


@pytest.mark.asyncio
async def test_without_clusters_nothing_is_published(
    host_services: HostServices, bundle: Bundle
) -> None:
    publisher = await configured(host_services)
    await publisher.publish_bundle(bundle)


@pytest.mark.parametrize(
    ("clusters", "message"),
    [
        ({"one": {"namespace": "spire"}}, "k8s_configmap.clusters.one.configmap_name: "),
        ({"one": cluster(Path("/k"), format="der")}, "clusters.one.format: expected one of"),
        ({"one": cluster(Path("/k"), namespace="")}, "clusters.one.namespace: must not be empty"),
        ({"one": cluster(Path("/k"), config_map="x")}, "clusters.one.config_map: "),
    ],
)
def test_bad_settings_are_named(clusters: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(K8sConfigMapConfig, {"clusters": clusters}, path=PLUGIN_NAME)
    assert message in str(raised.value)


def test_loading_the_plugin_imports_no_kubernetes_client() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_bundlepublisher_k8s_configmap.plugin as p; p.pyspire_bundle_publishers()"
    )
    assert loaded.isdisjoint({"kubernetes_asyncio", "aiohttp", "yaml"})


def test_the_hook_registers_a_bundle_publisher() -> None:
    (registration,) = pyspire_bundle_publishers()
    assert registration.name == PLUGIN_NAME
    assert isinstance(registration.factory(), BundlePublisher)


def test_the_readme_documents_the_settings() -> None:
    assert_readme_documents(README, K8sConfigMapConfig)
