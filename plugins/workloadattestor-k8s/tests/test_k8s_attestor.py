"""The ``k8s`` attestor against a kubelet served on loopback over HTTPS from the published
PodList shape, with the caller's cgroups in procfs trees (no real pod exists here)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from pyspire_workloadattestor_k8s import K8sAttestor, K8sAttestorConfig

from pyspire_sdk.cgroups import find_container
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, InvalidArgumentError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.procfs import read_cgroups
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.loopback import LoopbackServer, serve_loopback
from pyspire_sdk.testing.pki import TestAuthority
from pyspire_sdk.testing.readme import assert_readme_documents
from pyspire_sdk.testing.workload_attestor_contract import WorkloadAttestorContract

README = Path(__file__).resolve().parents[1] / "README.md"
KUBELET_CA = TestAuthority(TrustDomain("kubelet.test"))
PID = 4242
POD_UID = "2c48913c-b29f-11e7-9350-020968147796"
CONTAINER = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
SIDECAR = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
INIT = "34a2062fd26c805aa8cf814cdfe479322b791f80afb9ea4db02d50375df14b41"
TOKEN = "service-account-token"


def pod(uid: str = POD_UID, containers: tuple[str, ...] = (CONTAINER, SIDECAR)) -> dict[str, Any]:
    """A pod as the kubelet's /pods lists it (core/v1 Pod)."""
    statuses = [
        {
            "name": "web" if container == CONTAINER else "proxy",
            "image": "registry.example/web:1.2" if container == CONTAINER else "envoy:1.30",
            "imageID": (
                "registry.example/web@sha256:" + "aa" * 32
                if container == CONTAINER
                else "docker.io/envoy@sha256:" + "bb" * 32
            ),
            "containerID": f"containerd://{container}",
            "ready": True,
            "state": {"running": {"startedAt": "2026-12-07T06:00:00Z"}},
        }
        for container in containers
    ]
    return {
        "metadata": {
            "name": "web-5d8f7c9b4-x2x7q",
            "namespace": "shop",
            "uid": uid,
            "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-5d8f7c9b4",
                    "uid": "6f1a2b3c-0000-1111-2222-333344445555",
                    "controller": True,
                }
            ],
        },
        "spec": {"serviceAccountName": "web-sa", "nodeName": "node-1", "containers": []},
        "status": {
            "phase": "Running",
            "initContainerStatuses": [
                {
                    "name": "migrate",
                    "image": "migrate:3",
                    "imageID": "docker.io/migrate@sha256:" + "cc" * 32,
                    "containerID": f"containerd://{INIT}",
                    "state": {"terminated": {"exitCode": 0}},
                }
            ],
            "containerStatuses": statuses,
        },
    }


WEB_VALUES = [
    "sa:web-sa",
    "ns:shop",
    "node-name:node-1",
    f"pod-uid:{POD_UID}",
    "pod-name:web-5d8f7c9b4-x2x7q",
    "pod-image-count:2",
    "pod-init-image-count:1",
    "pod-image:registry.example/web@sha256:" + "aa" * 32,
    "pod-image:registry.example/web:1.2",
    "pod-image:docker.io/envoy@sha256:" + "bb" * 32,
    "pod-image:envoy:1.30",
    "pod-init-image:docker.io/migrate@sha256:" + "cc" * 32,
    "pod-init-image:migrate:3",
    "pod-label:app:web",
    "pod-label:pod-template-hash:5d8f7c9b4",
    "pod-owner:ReplicaSet:web-5d8f7c9b4",
    "pod-owner-uid:ReplicaSet:6f1a2b3c-0000-1111-2222-333344445555",
    "container-name:web",
    "container-image:registry.example/web@sha256:" + "aa" * 32,
    "container-image:registry.example/web:1.2",
]


@dataclass
class Kubelet:
    """Serves ``GET /pods``; ``listed_after`` fetches return an empty list first."""

    pods: list[dict[str, Any]] = field(default_factory=lambda: [pod()])
    listed_after: int = 0
    fetches: int = 0
    status: int = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.status != 200:
            return web.json_response({"message": "no"}, status=self.status)
        items = self.pods if self.fetches > self.listed_after else []
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "items": items})


@pytest_asyncio.fixture
async def kubelet(tmp_path: Path) -> AsyncIterator[tuple[Kubelet, LoopbackServer]]:
    fake = Kubelet()
    async with serve_loopback(
        [("GET", "/pods", fake.handle)],
        tls=KUBELET_CA,
        directory=tmp_path / "kubelet",
        tls_hosts=("node-1",),
    ) as server:
        yield fake, server


def proc_tree(root: Path, cgroup: str) -> Path:
    process = root / "proc" / str(PID)
    process.mkdir(parents=True)
    (process / "cgroup").write_text(cgroup)
    (process / "stat").write_text(f"{PID} (app) S {' '.join(['0'] * 18)} 99\n")
    return root / "proc"


CGROUP_V2_SYSTEMD = (
    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    f"{POD_UID.replace('-', '_')}.slice/cri-containerd-{CONTAINER}.scope\n"
)


def port_of(server: LoopbackServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def configured(
    host: HostServices,
    proc: Path,
    server: LoopbackServer,
    tmp_path: Path,
    environ: dict[str, str] | None = None,
    **settings: Any,
) -> K8sAttestor:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    base: dict[str, Any] = {
        "kubelet_secure_port": port_of(server),
        "kubelet_ca_path": str(server.ca_file),
        "token_path": str(token),
    }
    attestor = K8sAttestor(proc_root=proc, environ=(environ or {}).get)
    await attestor.configure(load_config(K8sAttestorConfig, {**base, **settings}, path="k8s"), host)
    return attestor


async def test_selectors_are_spires_and_the_token_is_sent(
    kubelet: tuple[Kubelet, LoopbackServer], tmp_path: Path, host_services: HostServices
) -> None:
    _, server = kubelet
    proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
    # Without a node name, the kubelet is reached at 127.0.0.1: its certificate names only
    # node-1, so the chain is verified and the name is not.
    attestor = await configured(host_services, proc, server, tmp_path)
    try:
        values = await attestor.attest(PID)
    finally:
        await attestor.close()
    assert sorted(values) == sorted(WEB_VALUES)
    assert len(values) == len(set(values))
    assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_the_node_name_from_the_environment_must_match_the_certificate(
    kubelet: tuple[Kubelet, LoopbackServer],
    tmp_path: Path,
    host_services: HostServices,
    fake_clock: FakeClock,
) -> None:
    _, server = kubelet
    proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
    # The name resolves to nothing reachable here, so ask for "localhost", which the
    # certificate does not name: verification by name must refuse it.
    attestor = await configured(
        host_services,
        proc,
        server,
        tmp_path,
        environ={"NODE": "localhost"},
        node_name_env="NODE",
        max_poll_attempts=1,
    )
    try:
        with pytest.raises(UnavailableError, match=r"GET https://localhost:\d+/pods: tls failed"):
            await attestor.attest(PID)
    finally:
        await attestor.close()
    fake = Kubelet()
    async with serve_loopback(
        [("GET", "/pods", fake.handle)],
        tls=KUBELET_CA,
        directory=tmp_path / "named",
        tls_hosts=("localhost",),
    ) as named:
        attestor = await configured(
            host_services, proc, named, tmp_path, node_name="localhost", node_name_env="NODE"
        )
        try:
            assert "container-name:web" in await attestor.attest(PID)
        finally:
            await attestor.close()


async def test_a_kubelet_signed_by_another_ca_is_refused_unless_verification_is_skipped(
    kubelet: tuple[Kubelet, LoopbackServer], tmp_path: Path, host_services: HostServices
) -> None:
    _, server = kubelet
    proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
    other = tmp_path / "other-ca.pem"
    other.write_bytes(TestAuthority(TrustDomain("other.test")).pem)
    refused = await configured(
        host_services, proc, server, tmp_path, kubelet_ca_path=str(other), max_poll_attempts=1
    )
    skipped = await configured(
        host_services,
        proc,
        server,
        tmp_path,
        kubelet_ca_path=str(other),
        skip_kubelet_verification=True,
    )
    try:
        with pytest.raises(UnavailableError, match="tls failed"):
            await refused.attest(PID)
        assert "container-name:web" in await skipped.attest(PID)
    finally:
        await refused.close()
        await skipped.close()


async def test_a_client_certificate_replaces_the_token(
    tmp_path: Path, host_services: HostServices
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    clients = TestAuthority(TrustDomain("clients.test"))
    svid = clients.issue(SpiffeId.parse("spiffe://clients.test/agent"))
    certificate, key = tmp_path / "agent.pem", tmp_path / "agent.key"
    leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
    certificate.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    private = serialization.load_der_private_key(svid.private_key, password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    fake = Kubelet()
    async with serve_loopback(
        [("GET", "/pods", fake.handle)],
        tls=KUBELET_CA,
        directory=tmp_path / "kubelet",
        tls_hosts=("node-1",),
        client_ca=clients,
    ) as server:
        proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
        attestor = await configured(
            host_services,
            proc,
            server,
            tmp_path,
            certificate_path=str(certificate),
            private_key_path=str(key),
        )
        try:
            assert "container-name:web" in await attestor.attest(PID)
        finally:
            await attestor.close()
    assert "authorization" not in server.requests[0].headers


async def test_the_read_only_port_is_plain_http_without_credentials(
    tmp_path: Path, host_services: HostServices
) -> None:
    fake = Kubelet()
    async with serve_loopback([("GET", "/pods", fake.handle)]) as server:
        proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
        attestor = K8sAttestor(proc_root=proc, environ={}.get)
        config = load_config(
            K8sAttestorConfig, {"kubelet_read_only_port": port_of(server)}, path="k8s"
        )
        await attestor.configure(config, host_services)
        try:
            assert sorted(await attestor.attest(PID)) == sorted(WEB_VALUES)
        finally:
            await attestor.close()
    assert "authorization" not in server.requests[0].headers


async def attest_advancing(attestor: K8sAttestor, clock: FakeClock) -> list[str] | Exception:
    task = asyncio.ensure_future(attestor.attest(PID))
    while not task.done():
        await asyncio.sleep(0.01)
        await clock.advance(0.5)
    try:
        return task.result()
    except Exception as error:
        return error


async def test_a_new_container_is_polled_for_until_listed_then_given_up(
    kubelet: tuple[Kubelet, LoopbackServer],
    tmp_path: Path,
    host_services: HostServices,
    fake_clock: FakeClock,
) -> None:
    fake, server = kubelet
    proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
    attestor = await configured(
        host_services, proc, server, tmp_path, max_poll_attempts=4, poll_retry_interval="500ms"
    )
    try:
        fake.listed_after = 2
        assert "container-name:web" in await attest_advancing(attestor, fake_clock)
        assert fake.fetches == 3
        fake.fetches, fake.listed_after = 0, 100
        await fake_clock.advance(1)
        failed = await attest_advancing(attestor, fake_clock)
        assert isinstance(failed, UnavailableError)
        assert "no selectors found after 4 poll attempts" in str(failed)
        assert fake.fetches == 4
        fake.fetches, fake.status = 0, 503
        await fake_clock.advance(1)
        unreachable = await attest_advancing(attestor, fake_clock)
        assert isinstance(unreachable, UnavailableError)
        assert "HTTP 503" in str(unreachable)
        assert fake.fetches == 4
    finally:
        await attestor.close()


async def test_concurrent_attestations_share_a_recent_pod_list(
    kubelet: tuple[Kubelet, LoopbackServer], tmp_path: Path, host_services: HostServices
) -> None:
    fake, server = kubelet
    proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
    attestor = await configured(host_services, proc, server, tmp_path)
    try:
        results = await asyncio.gather(*(attestor.attest(PID) for _ in range(8)))
    finally:
        await attestor.close()
    assert all(sorted(result) == sorted(WEB_VALUES) for result in results)
    assert fake.fetches == 1


async def test_init_containers_and_cgroupfs_v1_paths(
    kubelet: tuple[Kubelet, LoopbackServer], tmp_path: Path, host_services: HostServices
) -> None:
    _, server = kubelet
    proc = proc_tree(
        tmp_path,
        f"11:hugetlb:/kubepods/burstable/pod{POD_UID}/{INIT}\n"
        f"1:name=systemd:/kubepods/burstable/pod{POD_UID}/{INIT}\n",
    )
    attestor = await configured(host_services, proc, server, tmp_path)
    try:
        values = await attestor.attest(PID)
    finally:
        await attestor.close()
    assert "container-name:migrate" in values
    assert "container-image:migrate:3" in values


async def test_disabled_container_selectors_still_attest_a_known_pod(
    kubelet: tuple[Kubelet, LoopbackServer],
    tmp_path: Path,
    host_services: HostServices,
) -> None:
    fake, server = kubelet
    fake.pods = [pod(containers=(SIDECAR,))]  # the caller's container is not listed
    proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
    attestor = await configured(
        host_services, proc, server, tmp_path, disable_container_selectors=True
    )
    try:
        values = await attestor.attest(PID)
    finally:
        await attestor.close()
    assert f"pod-uid:{POD_UID}" in values
    assert not any(value.startswith("container-") for value in values)


async def test_one_container_in_two_pods_fails(
    kubelet: tuple[Kubelet, LoopbackServer], tmp_path: Path, host_services: HostServices
) -> None:
    fake, server = kubelet
    fake.pods = [pod(), pod(uid="00000000-1111-2222-3333-444444444444")]
    # A cgroup path without the pod UID (cri-o in its own cgroup namespace) matches any pod.
    proc = proc_tree(tmp_path, f"0::/../crio-{CONTAINER}.scope\n")
    attestor = await configured(host_services, proc, server, tmp_path)
    try:
        with pytest.raises(UnavailableError, match="two pods found"):
            await attestor.attest(PID)
    finally:
        await attestor.close()


async def test_no_container_no_opinion_and_a_bad_pid_is_an_error(
    kubelet: tuple[Kubelet, LoopbackServer], tmp_path: Path, host_services: HostServices
) -> None:
    fake, server = kubelet
    proc = proc_tree(tmp_path, "0::/user.slice/user-1000.slice/session-2.scope\n")
    attestor = await configured(host_services, proc, server, tmp_path)
    try:
        assert await attestor.attest(PID) == []
        with pytest.raises(InvalidArgumentError):
            await attestor.attest(-1)
        with pytest.raises(UnavailableError, match="does not exist"):
            await attestor.attest(PID + 1)
    finally:
        await attestor.close()
    assert fake.fetches == 0


async def test_a_malformed_pod_list_names_the_field(
    kubelet: tuple[Kubelet, LoopbackServer], tmp_path: Path, host_services: HostServices
) -> None:
    fake, server = kubelet
    broken = pod()
    broken["metadata"]["labels"] = ["not", "a", "map"]
    fake.pods = [broken]
    proc = proc_tree(tmp_path, CGROUP_V2_SYSTEMD)
    attestor = await configured(host_services, proc, server, tmp_path, max_poll_attempts=1)
    try:
        with pytest.raises(UnavailableError, match=r"items\[0\]\.metadata\.labels"):
            await attestor.attest(PID)
    finally:
        await attestor.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"kubelet_read_only_port": 10255, "kubelet_secure_port": 10250},
            "k8s: cannot use both the read-only and secure port",
        ),
        ({"certificate_path": "/c.pem"}, "k8s.private_key_path: is required"),
        ({"private_key_path": "/k.pem"}, "k8s.certificate_path: is required"),
        ({"poll_retry_interval": "soon"}, "k8s.poll_retry_interval"),
        ({"kubelet_port": 1}, "k8s.kubelet_port"),
    ],
)
def test_bad_settings_name_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(K8sAttestorConfig, settings, path="k8s")


async def test_unreadable_kubelet_ca_or_client_certificate_fail_at_configure(
    tmp_path: Path, host_services: HostServices
) -> None:
    for settings, name in (
        ({"kubelet_ca_path": str(tmp_path / "no-ca.pem")}, "no-ca.pem"),
        (
            {
                "skip_kubelet_verification": True,
                "certificate_path": str(tmp_path / "no-cert.pem"),
                "private_key_path": str(tmp_path / "no-key.pem"),
            },
            "no-cert.pem",
        ),
    ):
        attestor = K8sAttestor(environ={}.get)
        with pytest.raises(UnavailableError, match=name):
            await attestor.configure(load_config(K8sAttestorConfig, settings), host_services)
        await attestor.close()


def test_the_readme_documents_every_setting() -> None:
    assert_readme_documents(README, K8sAttestorConfig)


def test_registration_imports_no_http_client() -> None:
    modules = top_level_modules_imported_by(
        "import pyspire_workloadattestor_k8s.plugin as p; p.pyspire_workload_attestors()"
    )
    assert "aiohttp" not in modules


class TestK8sAttestor(WorkloadAttestorContract):
    @pytest_asyncio.fixture
    async def workload_attestor(
        self, host_services: HostServices, tmp_path: Path
    ) -> AsyncIterator[K8sAttestor]:
        if find_container(await read_cgroups(os.getpid()), with_pod_uid=True) is not None:
            pytest.skip("the test process runs in a container no test kubelet lists")
        attestor = K8sAttestor(environ={}.get)
        settings = {"token_path": str(tmp_path / "token"), "skip_kubelet_verification": True}
        config = load_config(K8sAttestorConfig, settings, path="k8s")
        await attestor.configure(config, host_services)
        yield attestor
        await attestor.close()

    @pytest.fixture
    def workload_attestor_name(self) -> str:
        return "k8s"

    @pytest.fixture
    def own_process_has_selectors(self) -> bool:
        return False
