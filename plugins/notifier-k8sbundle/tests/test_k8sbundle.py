"""``k8sbundle`` against a loopback API server speaking the Kubernetes shapes: the ConfigMap,
labelled webhook configurations and API services, the veto at start, failures and their
retry, a burst of changes, several clusters, and the settings."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pyspire_notifier_k8sbundle import PLUGIN_NAME, K8sBundleConfig, K8sBundleNotifier
from pyspire_notifier_k8sbundle.plugin import pyspire_notifiers

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.notifier import BundleLoaded, BundleUpdated, Notifier
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import TestAuthority
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.kubernetes import FakeKubernetesApi, FakeKubernetesEndpoints
from pyspire_sdk.testing.readme import assert_readme_documents

TD = TrustDomain("example.org")
README = Path(__file__).resolve().parents[1] / "README.md"
WEBHOOK_LABEL = "spiffe.io/webhook"
API_LABEL = "spiffe.io/apiservice"


def ca_bundle(bundle: Bundle) -> str:
    return base64.b64encode(bundle.to_pem().encode()).decode()


def config_map_value(api: FakeKubernetesApi, namespace: str = "spire") -> str | None:
    found = api.get("configmaps", namespace, "spire-bundle")
    return None if found is None else (found.get("data") or {}).get("bundle.crt")


async def configured(host: HostServices, **settings: object) -> K8sBundleNotifier:
    notifier = K8sBundleNotifier()
    await notifier.configure(load_config(K8sBundleConfig, settings, path=PLUGIN_NAME), host)
    return notifier


def webhook(name: str) -> dict[str, object]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"service": {"name": "svc", "namespace": "spire"}},
    }


@pytest.fixture
def api() -> FakeKubernetesApi:
    fake = FakeKubernetesApi()
    fake.put("configmaps", "spire", "spire-bundle", {"data": {}})
    labelled = {"labels": {WEBHOOK_LABEL: "true"}}
    fake.put(
        "validatingwebhookconfigurations",
        "",
        "validating",
        {"metadata": labelled, "webhooks": [webhook("a.example.org"), webhook("b.example.org")]},
    )
    fake.put(
        "mutatingwebhookconfigurations",
        "",
        "mutating",
        {"metadata": labelled, "webhooks": [webhook("m.example.org")]},
    )
    fake.put(
        "mutatingwebhookconfigurations", "", "unlabelled", {"webhooks": [webhook("u.example.org")]}
    )
    fake.put(
        "apiservices",
        "",
        "v1.example.org",
        {
            "metadata": {"labels": {API_LABEL: "true"}},
            "spec": {"groupPriorityMinimum": 100, "versionPriority": 10, "service": {"name": "s"}},
        },
    )
    return fake


@pytest_asyncio.fixture
async def kube(api: FakeKubernetesApi, tmp_path: Path) -> AsyncIterator[FakeKubernetesEndpoints]:
    async with api.serving(tmp_path) as endpoints:
        yield endpoints


@pytest.fixture
def bundle() -> Bundle:
    return TestAuthority(TD).bundle(sequence_number=1)


@pytest.mark.asyncio
async def test_the_loaded_bundle_reaches_the_config_map_webhooks_and_api_services(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    bundle: Bundle,
) -> None:
    notifier = await configured(
        host_services,
        kube_config_file_path=str(kube.kubeconfig),
        webhook_label=WEBHOOK_LABEL,
        api_service_label=API_LABEL,
    )
    await notifier.notify_and_advise(BundleLoaded(bundle))
    assert config_map_value(api) == bundle.to_pem()
    validating = api.get("validatingwebhookconfigurations", "", "validating")
    assert validating is not None
    assert [hook["clientConfig"] for hook in validating["webhooks"]] == [
        {"service": {"name": "svc", "namespace": "spire"}, "caBundle": ca_bundle(bundle)}
    ] * 2
    mutating = api.get("mutatingwebhookconfigurations", "", "mutating")
    assert mutating is not None
    assert mutating["webhooks"][0]["clientConfig"]["caBundle"] == ca_bundle(bundle)
    unlabelled = api.get("mutatingwebhookconfigurations", "", "unlabelled")
    assert unlabelled is not None
    assert "caBundle" not in unlabelled["webhooks"][0]["clientConfig"]
    service = api.get("apiservices", "", "v1.example.org")
    assert service is not None
    assert service["spec"]["caBundle"] == ca_bundle(bundle)
    assert service["spec"]["groupPriorityMinimum"] == 100
    # Told again, nothing already up to date is written.
    written = len(api.patches)
    await notifier.notify(BundleUpdated(bundle))
    assert len(api.patches) == written
    await notifier.close()


@pytest.mark.asyncio
async def test_a_change_replaces_the_bundle_and_a_burst_leaves_the_newest(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    bundle: Bundle,
) -> None:
    notifier = await configured(
        host_services, kube_config_file_path=str(kube.kubeconfig), webhook_label=WEBHOOK_LABEL
    )
    await notifier.notify_and_advise(BundleLoaded(bundle))
    changes = [TestAuthority(TD).bundle(sequence_number=n) for n in range(2, 7)]
    await asyncio.gather(*(notifier.notify(BundleUpdated(change)) for change in changes))
    # Racing writes conflict on the resource version and are done again on the fresh object;
    # the host never overlaps calls, and tells the newest bundle last.
    await notifier.notify(BundleUpdated(changes[-1]))
    assert config_map_value(api) == changes[-1].to_pem()
    mutating = api.get("mutatingwebhookconfigurations", "", "mutating")
    assert mutating is not None
    assert mutating["webhooks"][0]["clientConfig"]["caBundle"] == ca_bundle(changes[-1])
    await notifier.close()


@pytest.mark.asyncio
async def test_a_missing_config_map_vetoes_the_start(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    bundle: Bundle,
) -> None:
    notifier = await configured(
        host_services, kube_config_file_path=str(kube.kubeconfig), namespace="elsewhere"
    )
    with pytest.raises(UnavailableError, match="configmaps/spire-bundle failed: HTTP 404"):
        await notifier.notify_and_advise(BundleLoaded(bundle))
    await notifier.close()


@pytest.mark.asyncio
async def test_a_failed_update_raises_and_the_retry_writes(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    bundle: Bundle,
) -> None:
    notifier = await configured(host_services, kube_config_file_path=str(kube.kubeconfig))
    api.fail_next = 1
    with pytest.raises(UnavailableError, match="HTTP 503"):
        await notifier.notify(BundleUpdated(bundle))
    assert config_map_value(api) is None
    await notifier.notify(BundleUpdated(bundle))
    assert config_map_value(api) == bundle.to_pem()
    await notifier.close()


@pytest.mark.asyncio
async def test_more_clusters_are_updated_and_the_root_is_used_only_when_set(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    tmp_path: Path,
    bundle: Bundle,
) -> None:
    other = FakeKubernetesApi()
    other.put("configmaps", "infra", "spire-bundle", {"data": {}})
    (tmp_path / "other").mkdir()
    async with other.serving(tmp_path / "other") as second:
        notifier = await configured(
            host_services,
            clusters=[{"kube_config_file_path": str(second.kubeconfig), "namespace": "infra"}],
        )
        await notifier.notify(BundleUpdated(bundle))
        assert config_map_value(other, "infra") == bundle.to_pem()
        assert config_map_value(api) is None  # no root key set: only the listed cluster
        await notifier.close()


@pytest.mark.asyncio
async def test_other_events_are_ignored(host_services: HostServices, bundle: Bundle) -> None:
    notifier = K8sBundleNotifier()
    await notifier.notify(BundleLoaded(bundle))  # not configured, and not its event: no call
    await notifier.notify_and_advise(BundleUpdated(bundle))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"clusters": [{"namespace": "x"}]}, "k8sbundle.clusters[0].kube_config_file_path: "),
        ({"namespace": ""}, "k8sbundle.namespace: must not be empty"),
        ({"configmap": "x"}, "k8sbundle.configmap: "),
    ],
)
def test_bad_settings_are_named(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(K8sBundleConfig, settings, path=PLUGIN_NAME)
    assert message in str(raised.value)


def test_spire_defaults_apply_to_an_empty_configuration() -> None:
    (target,) = load_config(K8sBundleConfig, {}).targets()
    assert (target.namespace, target.config_map, target.config_map_key) == (
        "spire",
        "spire-bundle",
        "bundle.crt",
    )
    assert target.kube_config_file_path is None


def test_loading_the_plugin_imports_no_kubernetes_client() -> None:
    loaded = top_level_modules_imported_by(
        "import pyspire_notifier_k8sbundle.plugin as p; p.pyspire_notifiers()"
    )
    assert loaded.isdisjoint({"kubernetes_asyncio", "aiohttp", "yaml"})


def test_the_hook_registers_a_notifier() -> None:
    (registration,) = pyspire_notifiers()
    assert registration.name == PLUGIN_NAME
    assert isinstance(registration.factory(), Notifier)


def test_the_readme_documents_the_settings() -> None:
    assert_readme_documents(README, K8sBundleConfig)
