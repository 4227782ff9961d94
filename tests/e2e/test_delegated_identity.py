"""The Delegated Identity API between real processes: a server, an agent with an admin socket
and ``authorized_delegates``, a delegate process that the unix attestor knows by the path of
its interpreter, a workload process (``sleep``) it names by pid, and a process that is not
listed.

The delegate subscribes on behalf of a workload named by selectors (a Kubernetes-style workload
the agent cannot attest itself) and sees a new entry arrive on its open stream; it subscribes by
the pid of the real ``sleep`` process, which the agent attests itself; every SVID is checked
against the X.509 bundles the API streams, and its key against its certificate. It fetches
JWT-SVIDs for that pid and validates them with py-spiffe against the JWT bundle stream. A process
of the same user running another binary is refused by every method, with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from delegate import DelegateWatch, delegate_interpreter, run_delegate
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    short_temp_dir,
)

pytestmark = pytest.mark.slow

DELEGATE = f"spiffe://{TRUST_DOMAIN}/delegate"
NODE_USER = f"spiffe://{TRUST_DOMAIN}/node-user"
SLEEPER = f"spiffe://{TRUST_DOMAIN}/sleeper"
KUBE = f"spiffe://{TRUST_DOMAIN}/kube-web"
LATE = f"spiffe://{TRUST_DOMAIN}/kube-web-new"
SLEEP = os.path.realpath("/bin/sleep")
UPDATE_TIMEOUT = 20.0


class Setup:
    """The deployment, the delegate's interpreter and a running ``sleep``."""

    def __init__(self, deployed: Deployment, interpreter: Path, sleeper: subprocess.Popen[bytes]):
        self.deployed = deployed
        self.interpreter = interpreter
        self.sleeper = sleeper

    @property
    def admin_socket(self) -> Path:
        return self.deployed.agent.settings.admin_socket_path


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    root = short_temp_dir()
    interpreter = delegate_interpreter(root)
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(root=root, port=port),
        AgentSettings(
            root=root,
            server_port=port,
            bootstrap_bundle=root / "bootstrap.pem",
            admin_socket=True,
            extra=f'authorized_delegates = ["{DELEGATE}"]\n',
            plugins_toml="discover_workload_path = true\n",  # the unix attestor's table
        ),
        [
            (DELEGATE, [f"unix:path:{interpreter}"]),
            (NODE_USER, [f"unix:uid:{os.getuid()}"]),
            (SLEEPER, [f"unix:path:{SLEEP}"]),
            (KUBE, ["k8s:ns:web"]),
        ],
    )
    sleeper = subprocess.Popen([SLEEP, "300"])
    try:
        yield Setup(deployed, interpreter, sleeper)
    finally:
        sleeper.kill()
        sleeper.wait()
        deployed.stop()


def test_a_delegate_streams_a_workloads_svids_by_selectors_and_sees_a_new_entry(
    setup: Setup,
) -> None:
    watch = DelegateWatch(
        setup.interpreter, setup.admin_socket, "selectors", "k8s:ns:web", "k8s:sa:web"
    )
    try:
        first = watch.wait_for(f"{KUBE}", lambda u: u["spiffe_ids"] == [KUBE], UPDATE_TIMEOUT)
        assert first["verified"] == [True]
        assert first["federates_with"] == []

        setup.deployed.server.create_entry(LATE, setup.deployed.agent_id, "k8s:sa:web")
        both = watch.wait_for(
            f"{KUBE} and {LATE}", lambda u: sorted(u["spiffe_ids"]) == [KUBE, LATE], UPDATE_TIMEOUT
        )
    finally:
        watch.stop()
    assert both["verified"] == [True, True]
    serials = dict(zip(both["spiffe_ids"], both["serials"], strict=True))
    assert serials[KUBE] == first["serials"][0]
    assert len(watch.updates) == 2, watch.updates  # nothing else changed for this workload


def test_a_delegate_streams_the_svids_of_a_process_the_agent_attests_by_pid(
    setup: Setup,
) -> None:
    watch = DelegateWatch(setup.interpreter, setup.admin_socket, "pid", str(setup.sleeper.pid))
    try:
        update = watch.wait_for(
            f"{NODE_USER} and {SLEEPER}",
            lambda u: sorted(u["spiffe_ids"]) == [NODE_USER, SLEEPER],
            UPDATE_TIMEOUT,
        )
    finally:
        watch.stop()
    assert update["verified"] == [True, True]


def test_a_delegate_fetches_jwt_svids_that_validate_against_the_jwt_bundles(
    setup: Setup,
) -> None:
    got = run_delegate(
        setup.interpreter,
        setup.admin_socket,
        "jwt",
        "spiffe://example.org/db",
        "pid",
        str(setup.sleeper.pid),
    )
    assert sorted(got["spiffe_ids"]) == [NODE_USER, SLEEPER]
    assert got["validated"] == got["spiffe_ids"]
    assert got["bundle_trust_domains"] == [f"spiffe://{TRUST_DOMAIN}"]
    by_selectors = run_delegate(
        setup.interpreter, setup.admin_socket, "jwt", "web", "selectors", "k8s:ns:web"
    )
    assert by_selectors["validated"] == [KUBE]


def test_a_process_that_is_not_listed_is_refused_by_every_method(setup: Setup) -> None:
    got = run_delegate(sys.executable, setup.admin_socket, "denied")
    reason = (
        "caller not configured as an authorized delegate: none of its identities "
        f"({NODE_USER}) is listed in authorized_delegates"
    )
    assert got == {
        "x509_svids": ["PERMISSION_DENIED", reason],
        "x509_bundles": ["PERMISSION_DENIED", reason],
        "jwt_svids": ["PERMISSION_DENIED", reason],
        "jwt_bundles": ["PERMISSION_DENIED", reason],
    }
    # the delegate is still served on the same socket
    assert run_delegate(setup.interpreter, setup.admin_socket, "denied")["x509_bundles"] == [
        "OK",
        "",
    ]
