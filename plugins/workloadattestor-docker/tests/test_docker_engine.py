"""The ``docker`` attestor against a real Docker Engine: the SDK contract, and processes in
real containers (started by a private ``dockerd``) attested by their labels, environment and
image."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pyspire_workloadattestor_docker import DockerAttestor, DockerAttestorConfig
from pyspire_workloadattestor_docker.testing import TEST_IMAGE, DockerDaemon

from pyspire_sdk.cgroups import find_container
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.procfs import read_cgroups
from pyspire_sdk.testing.workload_attestor_contract import WorkloadAttestorContract


async def configured(host: HostServices, daemon: DockerDaemon, **settings: Any) -> DockerAttestor:
    attestor = DockerAttestor()
    config = load_config(
        DockerAttestorConfig, {"docker_socket_path": daemon.endpoint, **settings}, path="docker"
    )
    await attestor.configure(config, host)
    return attestor


class TestDockerAttestor(WorkloadAttestorContract):
    @pytest_asyncio.fixture
    async def workload_attestor(
        self, host_services: HostServices, docker_daemon: DockerDaemon
    ) -> AsyncIterator[DockerAttestor]:
        if find_container(await read_cgroups(os.getpid())) is not None:
            pytest.skip("the test process runs in a container this engine does not know")
        attestor = await configured(host_services, docker_daemon)
        yield attestor
        await attestor.close()

    @pytest.fixture
    def workload_attestor_name(self) -> str:
        return "docker"

    @pytest.fixture
    def own_process_has_selectors(self) -> bool:
        return False


@pytest.mark.asyncio
async def test_a_container_process_is_attested_by_labels_env_and_image(
    docker_daemon: DockerDaemon, host_services: HostServices
) -> None:
    container = docker_daemon.run_detached(labels={"app": "web"}, env={"MODE": "prod"})
    attestor = await configured(host_services, docker_daemon, docker_version="1.41")
    try:
        values = await attestor.attest(docker_daemon.pid_of(container))
    finally:
        await attestor.close()
        docker_daemon.remove(container)
    assert "label:app:web" in values
    assert "env:MODE=prod" in values
    assert f"image_id:{TEST_IMAGE}" in values
    assert f"image_config_digest:{docker_daemon.image_id()}" in values
    assert all(
        value.split(":")[0] in {"label", "env", "image_id", "image_config_digest"}
        for value in values
    )


@pytest.mark.asyncio
async def test_two_containers_are_told_apart_and_a_removed_one_fails(
    docker_daemon: DockerDaemon, host_services: HostServices
) -> None:
    first = docker_daemon.run_detached(labels={"app": "first"})
    second = docker_daemon.run_detached(labels={"app": "second"})
    attestor = await configured(host_services, docker_daemon)
    try:
        first_pid = docker_daemon.pid_of(first)
        assert "label:app:first" in await attestor.attest(first_pid)
        assert "label:app:second" in await attestor.attest(docker_daemon.pid_of(second))
        docker_daemon.remove(first)
        with pytest.raises(UnavailableError):
            await attestor.attest(first_pid)
    finally:
        await attestor.close()
        docker_daemon.remove(first, second)


@pytest.mark.asyncio
async def test_matchers_find_the_engines_cgroupfs_paths(
    docker_daemon: DockerDaemon, host_services: HostServices
) -> None:
    container = docker_daemon.run_detached(labels={"app": "matched"})
    pid = docker_daemon.pid_of(container)
    if not any(line.path == f"/docker/{container}" for line in await read_cgroups(pid)):
        docker_daemon.remove(container)
        pytest.skip("the engine does not use the cgroupfs driver's /docker/<id> paths")
    attestor = await configured(
        host_services,
        docker_daemon,
        use_new_container_locator=False,
        container_id_cgroup_matchers=["/docker/<id>"],
    )
    try:
        assert "label:app:matched" in await attestor.attest(pid)
    finally:
        await attestor.close()
        docker_daemon.remove(container)
