"""Bundle publishers and the ``k8sbundle`` notifier in a real ``pyspire-server``: the ``file``
publisher's file, the ``k8s_configmap`` publisher's ConfigMap and the ``k8sbundle`` notifier's
ConfigMap and webhook follow the trust bundle, at start and after a change made through the
Bundle API. The Kubernetes API is a loopback fake in this process."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import (
    TRUST_DOMAIN,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
    wait_for,
)

from pyspire.proto.gen.spire.api import types as types_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import TestAuthority
from pyspire_sdk.testing.kubernetes import FakeKubernetesApi

pytestmark = pytest.mark.slow

WAIT = 20.0


@pytest.fixture(scope="module")
def kubernetes() -> FakeKubernetesApi:
    api = FakeKubernetesApi()
    api.put("configmaps", "spire", "spire-bundle", {"data": {}})
    api.put(
        "mutatingwebhookconfigurations",
        "",
        "injector",
        {
            "metadata": {"labels": {"spiffe.io/webhook": "true"}},
            "webhooks": [{"name": "inject.example.org", "clientConfig": {}}],
        },
    )
    return api


@pytest.fixture(scope="module")
def server(kubernetes: FakeKubernetesApi) -> Iterator[ServerProcess]:
    root = short_temp_dir()
    (root / "public").mkdir()
    (root / "kube").mkdir()
    with kubernetes.serving_in_thread(root / "kube") as kube:
        process = ServerProcess(
            ServerSettings(
                root=root,
                port=free_port(),
                extra_plugins=f"""
[server.plugins.bundle_publisher.file]
path = "{root / "public" / "bundle.json"}"

[server.plugins.bundle_publisher.k8s_configmap.clusters.one]
namespace = "spire"
configmap_name = "published"
configmap_key = "bundle.json"
format = "spiffe"
kubeconfig_path = "{kube.kubeconfig}"

[server.plugins.notifier.k8sbundle]
webhook_label = "spiffe.io/webhook"
kube_config_file_path = "{kube.kubeconfig}"
""",
            )
        )
        try:
            process.start()
        except ProcessError as error:
            pytest.fail(f"the server did not start: {error}")
        try:
            yield process
        finally:
            process.terminate()


def shown(server: ServerProcess) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(server.cli("bundle", "show", "-format", "spiffe").stdout)
    return document


def published_with_sequence(path: Path, sequence: int) -> dict[str, Any] | None:
    if not path.exists():
        return None
    document: dict[str, Any] = json.loads(path.read_text())
    return document if document.get("spiffe_sequence") == sequence else None


def in_kubernetes(api: FakeKubernetesApi, document: dict[str, Any]) -> bool:
    """Whether the publisher's ConfigMap, the notifier's and the webhook hold ``document``'s
    bundle."""
    published = api.get("configmaps", "spire", "published") or {}
    notified = api.get("configmaps", "spire", "spire-bundle") or {}
    webhook = api.get("mutatingwebhookconfigurations", "", "injector") or {}
    pem = notified.get("data", {}).get("bundle.crt", "")
    ca_bundle = webhook["webhooks"][0]["clientConfig"].get("caBundle", "")
    return (
        json.loads(published.get("data", {}).get("bundle.json", "{}")) == document
        and pem == Bundle.from_spiffe_json(TrustDomain(TRUST_DOMAIN), document).to_pem()
        and base64.b64decode(ca_bundle).decode() == pem
    )


def test_the_published_bundle_follows_the_trust_bundle(
    server: ServerProcess, kubernetes: FakeKubernetesApi
) -> None:
    target = server.settings.root / "public" / "bundle.json"
    before = shown(server)
    document = wait_for(
        "the bundle loaded at start to be published",
        lambda: published_with_sequence(target, before["spiffe_sequence"]),
        WAIT,
        server.log(),
    )
    assert document == before
    assert target.stat().st_mode & 0o777 == 0o644
    wait_for(
        "the bundle loaded at start to reach Kubernetes",
        lambda: True if in_kubernetes(kubernetes, before) else None,
        WAIT,
        server.log(),
    )

    extra = TestAuthority(TrustDomain(TRUST_DOMAIN))
    appended = server.api(
        lambda client: client.bundle.append_bundle(
            bundle_pb.AppendBundleRequest(x509_authorities=[types_pb.X509Certificate(extra.der)])
        )
    )
    after = wait_for(
        "the changed bundle to be published",
        lambda: published_with_sequence(target, appended.sequence_number),
        WAIT,
        server.log(),
    )
    assert after == shown(server)
    assert len([key for key in after["keys"] if key["use"] == "x509-svid"]) == 2
    wait_for(
        "the changed bundle to reach Kubernetes",
        lambda: True if in_kubernetes(kubernetes, after) else None,
        WAIT,
        server.log(),
    )
