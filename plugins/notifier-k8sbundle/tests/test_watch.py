"""``k8sbundle`` watching labelled webhook configurations and API services on a loopback API
server that streams watch events: objects labelled after the start get the bundle with no
bundle change, the watch outlives a dropped connection (retried on the host clock) and a 410,
objects holding the bundle are left alone, and ``close`` ends the watches."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pyspire_notifier_k8sbundle import PLUGIN_NAME, K8sBundleConfig, K8sBundleNotifier
from pyspire_notifier_k8sbundle.watch import WATCH_RETRY

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.config import load_config
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.notifier import BundleLoaded, BundleUpdated
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import FakeClock, TestAuthority
from pyspire_sdk.testing.kubernetes import FakeKubernetesApi, FakeKubernetesEndpoints

TD = TrustDomain("example.org")
WEBHOOK_LABEL = "spiffe.io/webhook"
API_LABEL = "spiffe.io/apiservice"
VALIDATING = "validatingwebhookconfigurations"
MUTATING = "mutatingwebhookconfigurations"
WATCHES = 3  # validating, mutating, API services


def ca_bundle(bundle: Bundle) -> str:
    return base64.b64encode(bundle.to_pem().encode()).decode()


def webhook_configuration(labelled: bool, ca: str | None = None) -> dict[str, Any]:
    client_config: dict[str, Any] = {"service": {"name": "svc", "namespace": "spire"}}
    if ca is not None:
        client_config["caBundle"] = ca
    hook = {
        "name": "w.example.org",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": client_config,
    }
    labels = {WEBHOOK_LABEL: "true"} if labelled else {"other": "true"}
    return {"metadata": {"labels": labels}, "webhooks": [hook]}


def held(api: FakeKubernetesApi, resource: str, name: str) -> str | None:
    found = api.get(resource, "", name)
    if found is None:
        return None
    if resource == "apiservices":
        return str(found["spec"].get("caBundle"))
    return str(found["webhooks"][0]["clientConfig"].get("caBundle"))


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Until ``condition`` holds: watch events travel over a real socket."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not condition():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
def api() -> FakeKubernetesApi:
    fake = FakeKubernetesApi()
    fake.put("configmaps", "spire", "spire-bundle", {"data": {}})
    fake.put(VALIDATING, "", "at-start", webhook_configuration(labelled=True))
    return fake


@pytest_asyncio.fixture
async def kube(api: FakeKubernetesApi, tmp_path: Path) -> AsyncIterator[FakeKubernetesEndpoints]:
    async with api.serving(tmp_path) as endpoints:
        yield endpoints


@pytest.fixture
def bundle() -> Bundle:
    return TestAuthority(TD).bundle(sequence_number=1)


@pytest_asyncio.fixture
async def notifier(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    bundle: Bundle,
) -> AsyncIterator[K8sBundleNotifier]:
    settings = {
        "kube_config_file_path": str(kube.kubeconfig),
        "webhook_label": WEBHOOK_LABEL,
        "api_service_label": API_LABEL,
    }
    started = K8sBundleNotifier()
    await started.configure(load_config(K8sBundleConfig, settings, path=PLUGIN_NAME), host_services)
    await started.notify_and_advise(BundleLoaded(bundle))
    await eventually(lambda: api.watching == WATCHES, "every collection watched")
    yield started
    await started.close()


def patches_of(api: FakeKubernetesApi, name: str) -> int:
    return sum(1 for _, _, patched in api.patches if patched == name)


@pytest.mark.asyncio
async def test_objects_created_labelled_after_the_start_get_the_bundle_at_once(
    api: FakeKubernetesApi, notifier: K8sBundleNotifier, bundle: Bundle
) -> None:
    assert held(api, VALIDATING, "at-start") == ca_bundle(bundle)
    api.put(MUTATING, "", "later", webhook_configuration(labelled=True))
    api.put(
        "apiservices",
        "",
        "v1.later.example.org",
        {"metadata": {"labels": {API_LABEL: "true"}}, "spec": {"groupPriorityMinimum": 100}},
    )
    await eventually(lambda: held(api, MUTATING, "later") == ca_bundle(bundle), "webhook patched")
    await eventually(
        lambda: held(api, "apiservices", "v1.later.example.org") == ca_bundle(bundle),
        "API service patched",
    )
    service = api.get("apiservices", "", "v1.later.example.org")
    assert service is not None and service["spec"]["groupPriorityMinimum"] == 100
    # Its own patch comes back as a MODIFIED event: no second patch.
    api.put(VALIDATING, "", "marker", webhook_configuration(labelled=True))
    await eventually(lambda: held(api, VALIDATING, "marker") == ca_bundle(bundle), "marker")
    assert patches_of(api, "later") == 1


@pytest.mark.asyncio
async def test_an_object_labelled_later_gets_the_bundle(
    api: FakeKubernetesApi, notifier: K8sBundleNotifier, bundle: Bundle
) -> None:
    api.put(VALIDATING, "", "relabelled", webhook_configuration(labelled=False))
    api.put(VALIDATING, "", "marker", webhook_configuration(labelled=True))
    await eventually(lambda: held(api, VALIDATING, "marker") == ca_bundle(bundle), "marker")
    assert held(api, VALIDATING, "relabelled") == "None"  # not labelled: not touched
    api.put(VALIDATING, "", "relabelled", webhook_configuration(labelled=True))
    await eventually(
        lambda: held(api, VALIDATING, "relabelled") == ca_bundle(bundle), "relabelled patched"
    )


@pytest.mark.asyncio
async def test_an_object_already_holding_the_bundle_is_not_patched(
    api: FakeKubernetesApi, notifier: K8sBundleNotifier, bundle: Bundle
) -> None:
    api.put(VALIDATING, "", "holding", webhook_configuration(labelled=True, ca=ca_bundle(bundle)))
    holding = webhook_configuration(labelled=True, ca=ca_bundle(bundle))
    holding["metadata"]["annotations"] = {"changed": "yes"}
    api.put(VALIDATING, "", "holding", holding)  # changed, still holding it
    api.put(VALIDATING, "", "marker", webhook_configuration(labelled=True))
    await eventually(lambda: held(api, VALIDATING, "marker") == ca_bundle(bundle), "marker")
    assert patches_of(api, "holding") == 0


@pytest.mark.asyncio
async def test_an_object_another_writer_changed_gets_the_bundle_back(
    api: FakeKubernetesApi, notifier: K8sBundleNotifier, bundle: Bundle
) -> None:
    api.put(VALIDATING, "", "fought", webhook_configuration(labelled=True))
    await eventually(lambda: held(api, VALIDATING, "fought") == ca_bundle(bundle), "patched")
    # Another writer puts its own CA bundle back: the watch restores ours, as SPIRE's does, and
    # its own patch coming back as an event makes no further patch.
    api.put(VALIDATING, "", "fought", webhook_configuration(labelled=True, ca="b3RoZXI="))
    await eventually(lambda: held(api, VALIDATING, "fought") == ca_bundle(bundle), "restored")
    api.put(VALIDATING, "", "marker", webhook_configuration(labelled=True))
    await eventually(lambda: held(api, VALIDATING, "marker") == ca_bundle(bundle), "marker")
    assert patches_of(api, "fought") == 2
    # A changed bundle reaches it, and the watch holds it to the new one.
    changed = TestAuthority(TD).bundle(sequence_number=2)
    await notifier.notify(BundleUpdated(changed))
    assert held(api, VALIDATING, "fought") == ca_bundle(changed)
    api.put(VALIDATING, "", "fought", webhook_configuration(labelled=True, ca="b3RoZXI="))
    await eventually(lambda: held(api, VALIDATING, "fought") == ca_bundle(changed), "restored")
    # Deleted and created again, it is a new object: patched again.
    api.delete(VALIDATING, "", "fought")
    api.put(VALIDATING, "", "fought", webhook_configuration(labelled=True))
    await eventually(lambda: held(api, VALIDATING, "fought") == ca_bundle(changed), "recreated")


@pytest.mark.asyncio
async def test_the_watch_survives_a_dropped_connection_retrying_on_the_host_clock(
    api: FakeKubernetesApi, notifier: K8sBundleNotifier, fake_clock: FakeClock, bundle: Bundle
) -> None:
    opened = api.watches
    api.fail_next = WATCHES  # the first attempts to watch again fail too
    api.drop_watches()
    await eventually(lambda: fake_clock.sleepers == WATCHES, "every watch waiting to retry")
    assert api.watching == 0
    assert api.watches == opened  # nothing reconnects before the host clock moves
    api.put(VALIDATING, "", "while-down", webhook_configuration(labelled=True))
    await fake_clock.advance(WATCH_RETRY.initial)  # first delay: the 503s, a second delay
    await eventually(lambda: fake_clock.sleepers == WATCHES, "waiting after the 503s")
    assert api.watches == opened
    await fake_clock.advance(WATCH_RETRY.initial * WATCH_RETRY.multiplier)
    await eventually(lambda: api.watching == WATCHES, "watching again")
    # Watched again from the last version seen: the event missed while down arrives.
    await eventually(
        lambda: held(api, VALIDATING, "while-down") == ca_bundle(bundle), "missed event"
    )
    api.put(MUTATING, "", "after", webhook_configuration(labelled=True))
    await eventually(lambda: held(api, MUTATING, "after") == ca_bundle(bundle), "after")


@pytest.mark.asyncio
async def test_a_410_lists_again(
    api: FakeKubernetesApi, notifier: K8sBundleNotifier, fake_clock: FakeClock, bundle: Bundle
) -> None:
    opened = api.watches
    api.drop_watches()
    await eventually(lambda: fake_clock.sleepers == WATCHES, "every watch waiting to retry")
    api.put(VALIDATING, "", "compacted", webhook_configuration(labelled=True))
    api.compact()  # the event is gone from history: only a new list finds the object
    await fake_clock.advance(WATCH_RETRY.initial)
    await eventually(lambda: api.watching == WATCHES, "watching again")
    assert api.watches == opened + 2 * WATCHES  # each: 410 Gone, then listed and watched
    await eventually(lambda: held(api, VALIDATING, "compacted") == ca_bundle(bundle), "relisted")
    assert fake_clock.sleepers == 0  # a 410 is no failure: no waiting
    api.put(VALIDATING, "", "after", webhook_configuration(labelled=True))
    await eventually(lambda: held(api, VALIDATING, "after") == ca_bundle(bundle), "after")


@pytest.mark.asyncio
async def test_close_cancels_and_awaits_the_watches(
    host_services: HostServices,
    api: FakeKubernetesApi,
    kube: FakeKubernetesEndpoints,
    fake_clock: FakeClock,
    tmp_path: Path,
    bundle: Bundle,
) -> None:
    other = FakeKubernetesApi()
    other.put("configmaps", "spire", "spire-bundle", {"data": {}})
    (tmp_path / "other").mkdir()
    before = asyncio.all_tasks()
    async with other.serving(tmp_path / "other") as second:
        notifier = K8sBundleNotifier()
        settings = {
            "kube_config_file_path": str(kube.kubeconfig),
            "webhook_label": WEBHOOK_LABEL,
            "clusters": [
                {"kube_config_file_path": str(second.kubeconfig), "api_service_label": API_LABEL}
            ],
        }
        await notifier.configure(
            load_config(K8sBundleConfig, settings, path=PLUGIN_NAME), host_services
        )
        await notifier.notify_and_advise(BundleLoaded(bundle))
        await eventually(lambda: api.watching == 2 and other.watching == 1, "both clusters")
        other.put(
            "apiservices", "", "v1.x", {"metadata": {"labels": {API_LABEL: "true"}}, "spec": {}}
        )
        await eventually(lambda: held(other, "apiservices", "v1.x") == ca_bundle(bundle), "other")
        api.drop_watches()  # one cluster's watches wait on the clock, the other's stream
        await eventually(lambda: fake_clock.sleepers == 2, "waiting to retry")
        await asyncio.wait_for(notifier.close(), 5)
        await eventually(lambda: other.watching == 0, "the other cluster's stream closed")
        assert fake_clock.sleepers == 0
        assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
