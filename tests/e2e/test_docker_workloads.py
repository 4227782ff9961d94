"""Workloads in real Docker containers get the SVID of the entry naming their container's label
through a bind-mounted Workload API socket; a process outside, or in another container, does
not.

The container's image holds only a static busybox, so the workload client (py-spiffe, run by
this repository's ``processes.py``) comes from the host: the container bind-mounts, read-only,
the host's ``/usr`` (the image links ``/lib`` and ``/lib64`` into it), the Python installation
the virtual environment was made from, and this repository (which holds the virtual
environment and the editable installs). The agent sees the container's process through
SO_PEERCRED like any other caller, finds its container in ``/proc/<pid>/cgroup`` and asks the
private Docker Engine for its labels.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
)
from pyspire_workloadattestor_docker.testing import (
    TEST_IMAGE,
    DockerDaemon,
    engine_unavailable_reason,
)

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"
REPOSITORY = Path(__file__).resolve().parents[2]
WORKLOAD = REPOSITORY / "tests" / "e2e" / "processes.py"


@pytest.fixture(scope="module")
def docker_daemon() -> Iterator[DockerDaemon]:
    reason = engine_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    daemon = DockerDaemon()
    try:
        daemon.start()
    except RuntimeError as error:
        pytest.skip(f"no Docker Engine could start: {str(error)[-2000:]}")
    try:
        yield daemon
    finally:
        daemon.stop()


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


def in_container(
    daemon: DockerDaemon, deployment: Deployment, label: str, action: str
) -> dict[str, Any]:
    """Run the workload client in a new container labelled ``app=<label>``; its JSON answer."""
    sockets = deployment.agent.socket_path.parent
    mounts = {Path("/usr"), Path(sys.base_prefix).resolve(), REPOSITORY}
    argv = ["run", "--rm", "--network", "none", "--label", f"app={label}"]
    for mount in sorted(mounts):
        argv += ["-v", f"{mount}:{mount}:ro"]
    argv += ["-v", f"{sockets}:{sockets}", TEST_IMAGE]
    argv += [sys.executable, str(WORKLOAD), deployment.agent.endpoint, action]
    result = daemon.docker(*argv, check=False)
    assert result.returncode == 0, f"{result.stderr}\n{deployment.logs()[-4000:]}"
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_a_process_in_the_labelled_container_gets_its_svid(
    docker_daemon: DockerDaemon, deployment: Deployment
) -> None:
    got = in_container(docker_daemon, deployment, "web", "ids")
    assert got["spiffe_ids"] == [WEB]


def test_a_process_in_another_container_or_outside_is_denied(
    docker_daemon: DockerDaemon, deployment: Deployment
) -> None:
    denied = in_container(docker_daemon, deployment, "other", "denied")
    assert denied["fetch_x509_svid"] == "PERMISSION_DENIED"
    outside = run_workload(deployment.agent.endpoint, "denied")
    assert outside["fetch_x509_svid"] == "PERMISSION_DENIED"
