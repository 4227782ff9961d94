"""The ``docker`` attestor against a fake engine on a unix socket and procfs trees: selectors
exactly as SPIRE makes them, retries, the two container locators, configuration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from pyspire_workloadattestor_docker import DockerAttestor, DockerAttestorConfig
from pyspire_workloadattestor_docker.attestor import INSPECT_RETRIES

from pyspire_sdk.cgroups import ContainerConflictError
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, InvalidArgumentError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.testing.fake_clock import FakeClock
from pyspire_sdk.testing.imports import top_level_modules_imported_by
from pyspire_sdk.testing.readme import assert_readme_documents

README = Path(__file__).resolve().parents[1] / "README.md"
ID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
OTHER = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
IMAGE_ID = "sha256:" + "ab" * 32
PID = 4242


@dataclass
class FakeEngine:
    """Answers inspect calls like the Docker Engine API; ``failures`` answers 500 first."""

    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    paths: list[str] = field(default_factory=list)

    async def container(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if self.failures > 0:
            self.failures -= 1
            return web.json_response({"message": "busy"}, status=500)
        found = self.containers.get(request.match_info["id"])
        if found is None:
            return web.json_response({"message": "No such container"}, status=404)
        return web.json_response({"Id": request.match_info["id"], "Config": found})

    async def image(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        found = self.images.get(request.match_info["name"])
        if found is None:
            return web.json_response({"message": "No such image"}, status=404)
        return web.json_response({"Id": found})


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[FakeEngine, Path]]:
    fake = FakeEngine()
    application = web.Application()
    for prefix in ("", "/v1.41"):
        application.router.add_get(prefix + "/containers/{id}/json", fake.container)
        application.router.add_get(prefix + "/images/{name:.+}/json", fake.image)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    socket = tmp_path / "docker.sock"
    await web.UnixSite(runner, str(socket)).start()
    yield fake, socket
    await runner.cleanup()


def proc_tree(root: Path, cgroup: str, pid: int = PID) -> Path:
    process = root / "proc" / str(pid)
    process.mkdir(parents=True)
    (process / "cgroup").write_text(cgroup)
    (process / "stat").write_text(f"{pid} (app) S {' '.join(['0'] * 18)} 99\n")
    return root / "proc"


async def attestor_for(
    host: HostServices, proc: Path, socket: Path, **settings: Any
) -> DockerAttestor:
    attestor = DockerAttestor(proc_root=proc)
    config = load_config(
        DockerAttestorConfig, {"docker_socket_path": f"unix://{socket}", **settings}, path="docker"
    )
    await attestor.configure(config, host)
    return attestor


WEB_CONFIG = {
    "Labels": {"app": "web", "com.example.tier": "front:end"},
    "Env": ["PATH=/usr/bin", "MODE=prod=1"],
    "Image": "registry.example/web:1.2",
}


async def test_selectors_are_spires(
    engine: tuple[FakeEngine, Path], tmp_path: Path, host_services: HostServices
) -> None:
    fake, socket = engine
    fake.containers[ID] = WEB_CONFIG
    fake.images["registry.example/web:1.2"] = IMAGE_ID
    proc = proc_tree(tmp_path, f"0::/system.slice/docker-{ID}.scope\n")
    attestor = await attestor_for(host_services, proc, socket)
    try:
        values = await attestor.attest(PID)
    finally:
        await attestor.close()
    assert sorted(values) == sorted(
        [
            "label:app:web",
            "label:com.example.tier:front:end",
            "env:PATH=/usr/bin",
            "env:MODE=prod=1",
            "image_id:registry.example/web:1.2",
            f"image_config_digest:{IMAGE_ID}",
        ]
    )
    assert fake.paths == [f"/containers/{ID}/json", "/images/registry.example/web:1.2/json"]


async def test_the_api_version_prefixes_every_call(
    engine: tuple[FakeEngine, Path], tmp_path: Path, host_services: HostServices
) -> None:
    fake, socket = engine
    fake.containers[ID] = {"Labels": None, "Env": None, "Image": ""}
    proc = proc_tree(tmp_path, f"4:memory:/docker/{ID}\n")
    attestor = await attestor_for(host_services, proc, socket, docker_version="1.41")
    try:
        assert await attestor.attest(PID) == []
    finally:
        await attestor.close()
    # No image named, no image call, and a container without labels or env has no selectors.
    assert fake.paths == [f"/v1.41/containers/{ID}/json"]


async def test_an_image_the_engine_lost_gives_no_digest(
    engine: tuple[FakeEngine, Path], tmp_path: Path, host_services: HostServices
) -> None:
    fake, socket = engine
    fake.containers[ID] = {"Labels": {"a": "b"}, "Image": "gone:1"}
    proc = proc_tree(tmp_path, f"0::/docker/{ID}\n")
    attestor = await attestor_for(host_services, proc, socket)
    try:
        assert sorted(await attestor.attest(PID)) == ["image_id:gone:1", "label:a:b"]
    finally:
        await attestor.close()


async def test_a_process_in_no_container_has_no_opinion_and_no_engine_call(
    engine: tuple[FakeEngine, Path], tmp_path: Path, host_services: HostServices
) -> None:
    fake, socket = engine
    proc = proc_tree(tmp_path, "0::/user.slice/user-1000.slice/session-2.scope\n")
    attestor = await attestor_for(host_services, proc, socket)
    try:
        assert await attestor.attest(PID) == []
    finally:
        await attestor.close()
    assert fake.paths == []


async def retried(attestor: DockerAttestor, clock: FakeClock) -> list[str] | BaseException:
    """Attest while advancing the fake clock through the retry waits."""
    task = asyncio.ensure_future(attestor.attest(PID))
    while not task.done():
        await asyncio.sleep(0.01)
        await clock.advance(0.5)
    try:
        return task.result()
    except Exception as error:
        return error


async def test_inspection_is_retried_three_times(
    engine: tuple[FakeEngine, Path],
    tmp_path: Path,
    host_services: HostServices,
    fake_clock: FakeClock,
) -> None:
    fake, socket = engine
    fake.containers[ID] = {"Labels": {"app": "web"}}
    proc = proc_tree(tmp_path, f"0::/docker/{ID}\n")
    attestor = await attestor_for(host_services, proc, socket)
    try:
        fake.failures = INSPECT_RETRIES
        assert await retried(attestor, fake_clock) == ["label:app:web"]
        fake.paths.clear()
        fake.failures = INSPECT_RETRIES + 1
        failed = await retried(attestor, fake_clock)
    finally:
        await attestor.close()
    assert isinstance(failed, UnavailableError)
    assert f"container {ID}: cannot inspect it" in str(failed)
    assert len(fake.paths) == INSPECT_RETRIES + 1


async def test_an_unknown_container_or_absent_engine_fails_the_attestation(
    engine: tuple[FakeEngine, Path],
    tmp_path: Path,
    host_services: HostServices,
    fake_clock: FakeClock,
) -> None:
    _, socket = engine
    proc = proc_tree(tmp_path, f"0::/docker/{ID}\n")
    for target in (socket, tmp_path / "absent.sock"):
        attestor = await attestor_for(host_services, proc, target)
        try:
            assert isinstance(await retried(attestor, fake_clock), UnavailableError)
        finally:
            await attestor.close()


async def test_two_containers_in_one_process_fail_the_attestation(
    engine: tuple[FakeEngine, Path], tmp_path: Path, host_services: HostServices
) -> None:
    _, socket = engine
    proc = proc_tree(tmp_path, f"1:cpu:/docker/{ID}\n0::/docker/{OTHER}\n")
    attestor = await attestor_for(host_services, proc, socket)
    try:
        with pytest.raises(ContainerConflictError):
            await attestor.attest(PID)
    finally:
        await attestor.close()


async def test_custom_matchers_replace_the_locator(
    engine: tuple[FakeEngine, Path], tmp_path: Path, host_services: HostServices
) -> None:
    fake, socket = engine
    fake.containers["short-name"] = {"Labels": {"app": "legacy"}}
    proc = proc_tree(tmp_path, "4:memory:/custom/short-name\n0::/\n")
    attestor = await attestor_for(
        host_services,
        proc,
        socket,
        use_new_container_locator=False,
        container_id_cgroup_matchers=["/custom/<id>"],
    )
    try:
        assert await attestor.attest(PID) == ["label:app:legacy"]
    finally:
        await attestor.close()


async def test_a_gone_process_and_a_bad_pid_are_errors(
    engine: tuple[FakeEngine, Path], tmp_path: Path, host_services: HostServices
) -> None:
    _, socket = engine
    proc = proc_tree(tmp_path, f"0::/docker/{ID}\n")
    attestor = await attestor_for(host_services, proc, socket)
    try:
        with pytest.raises(UnavailableError, match="does not exist"):
            await attestor.attest(PID + 1)
        with pytest.raises(InvalidArgumentError):
            await attestor.attest(0)
    finally:
        await attestor.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"docker_socket_path": "tcp://127.0.0.1:2375"},
            "docker.docker_socket_path: must be unix://",
        ),
        (
            {"docker_socket_path": "unix://relative.sock"},
            "docker.docker_socket_path: must be unix://",
        ),
        ({"docker_version": "v1.41"}, "docker.docker_version: must be an API version"),
        (
            {"container_id_cgroup_matchers": ["/docker/<id>"]},
            "docker.container_id_cgroup_matchers: the new container locator and custom",
        ),
        (
            {"container_id_cgroup_matchers": ["/docker/*"], "use_new_container_locator": False},
            "docker.container_id_cgroup_matchers: pattern '/docker/\\*' must contain",
        ),
        ({"docker_sock": "x"}, "docker.docker_sock"),
    ],
)
def test_bad_settings_name_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(DockerAttestorConfig, settings, path="docker")


def test_the_readme_documents_every_setting() -> None:
    assert_readme_documents(README, DockerAttestorConfig)


def test_registration_imports_no_http_client() -> None:
    modules = top_level_modules_imported_by(
        "import pyspire_workloadattestor_docker.plugin as p; p.pyspire_workload_attestors()"
    )
    assert "aiohttp" not in modules
