"""A real agent with the ``k8s`` attestor serves a workload in a real container placed in a pod's
cgroup (``--cgroup-parent /kubepods/besteffort/pod<uid>``, the kubelet's cgroupfs layout), asking
a kubelet served on loopback over HTTPS with a service account token.

The kubelet lists the new container only from its third pod list on, as a kubelet that has not
caught up with a container that just started: the agent polls until it is listed. A container
of another pod, with another service account, is denied. How the client runs in a busybox
container: :mod:`containers`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from containers import create_workload, run_created
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    short_temp_dir,
)
from pyspire_workloadattestor_docker.testing import DockerDaemon

from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing.loopback import LoopbackServer, LoopbackThread
from pyspire_sdk.testing.pki import TestAuthority

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/shop/web"
TOKEN = "agent-service-account-token"
LISTED_FROM_FETCH = 3


@dataclass
class Kubelet:
    """``GET /pods`` listing the pods added so far; each pod from its third fetch on."""

    pods: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pods.append((self.fetches + LISTED_FROM_FETCH, pod))

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"message": "Unauthorized"}, status=401)
        with self.lock:
            self.fetches += 1
            items = [pod for listed_from, pod in self.pods if self.fetches >= listed_from]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "items": items})


def pod(uid: str, container: str, service_account: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"web-{uid[:5]}", "namespace": "shop", "uid": uid},
        "spec": {"serviceAccountName": service_account, "nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "web",
                    "image": "pyspire-busybox:test",
                    "imageID": "docker-pullable://pyspire-busybox@sha256:" + "ab" * 32,
                    "containerID": f"docker://{container}",
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def kubelet() -> Iterator[tuple[Kubelet, LoopbackServer]]:
    root = short_temp_dir()
    fake = Kubelet()
    with LoopbackThread(
        [("GET", "/pods", fake.handle)],
        tls=TestAuthority(TrustDomain("cluster.local")),
        directory=root,
        tls_hosts=("node-1",),
    ) as server:
        yield fake, server


@pytest.fixture(scope="module")
def deployment(
    docker_daemon: DockerDaemon, kubelet: tuple[Kubelet, LoopbackServer]
) -> Iterator[Deployment]:
    _, server = kubelet
    root = short_temp_dir()
    token = root / "token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(root=root, port=port),
        AgentSettings(
            root=root,
            server_port=port,
            bootstrap_bundle=root / "bootstrap.pem",
            plugins_toml=(
                "[agent.plugins.workload_attestor.k8s]\n"
                f"kubelet_secure_port = {server.url.rsplit(':', 1)[1]}\n"
                f'kubelet_ca_path = "{server.ca_file}"\n'
                f'token_path = "{token}"\n'
                'poll_retry_interval = "100ms"\n'
            ),
        ),
        [(WEB, ["k8s:ns:shop", "k8s:sa:web", "k8s:container-name:web"])],
    )
    try:
        yield deployed
    finally:
        deployed.stop()


def run_in_pod(
    daemon: DockerDaemon, deployment: Deployment, kubelet: Kubelet, account: str, action: str
) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    container = create_workload(
        daemon, deployment.agent, action, ["--cgroup-parent", f"/kubepods/besteffort/pod{uid}"]
    )
    kubelet.add(pod(uid, container, account))
    return run_created(daemon, container)


def test_a_container_of_a_pod_gets_the_svid_once_the_kubelet_lists_it(
    docker_daemon: DockerDaemon,
    deployment: Deployment,
    kubelet: tuple[Kubelet, LoopbackServer],
) -> None:
    fake, _ = kubelet
    before = fake.fetches
    got = run_in_pod(docker_daemon, deployment, fake, "web", "ids")
    assert got["spiffe_ids"] == [WEB]
    assert fake.fetches - before >= LISTED_FROM_FETCH


def test_a_container_of_another_service_account_is_denied(
    docker_daemon: DockerDaemon,
    deployment: Deployment,
    kubelet: tuple[Kubelet, LoopbackServer],
) -> None:
    fake, _ = kubelet
    denied = run_in_pod(docker_daemon, deployment, fake, "batch", "denied")
    assert denied["fetch_x509_svid"] == "PERMISSION_DENIED"
