"""Workloads in real Docker containers get the SVID of the entry naming their container's label
through a bind-mounted Workload API socket; a process outside, or in another container, does
not. How the client runs in a busybox container: :mod:`containers`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from containers import run_in_container
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
)
from pyspire_workloadattestor_docker.testing import DockerDaemon

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"


@pytest.fixture(scope="module")
def deployment(docker_daemon: DockerDaemon) -> Iterator[Deployment]:
    root = short_temp_dir()
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(root=root, port=port),
        AgentSettings(
            root=root,
            server_port=port,
            bootstrap_bundle=root / "bootstrap.pem",
            plugins_toml=(
                "[agent.plugins.workload_attestor.docker]\n"
                f'docker_socket_path = "{docker_daemon.endpoint}"\n'
            ),
        ),
        [(WEB, ["docker:label:app:web"])],
    )
    try:
        yield deployed
    finally:
        deployed.stop()


def test_a_process_in_the_labelled_container_gets_its_svid(
    docker_daemon: DockerDaemon, deployment: Deployment
) -> None:
    got = run_in_container(docker_daemon, deployment.agent, "ids", ["--label", "app=web"])
    assert got["spiffe_ids"] == [WEB]


def test_a_process_in_another_container_or_outside_is_denied(
    docker_daemon: DockerDaemon, deployment: Deployment
) -> None:
    denied = run_in_container(docker_daemon, deployment.agent, "denied", ["--label", "app=other"])
    assert denied["fetch_x509_svid"] == "PERMISSION_DENIED"
    outside = run_workload(deployment.agent.endpoint, "denied")
    assert outside["fetch_x509_svid"] == "PERMISSION_DENIED"
