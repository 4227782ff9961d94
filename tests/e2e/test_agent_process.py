"""A server, an agent and workloads as real processes: py-spiffe fetches and validates X.509 and
JWT identities over the agent's Workload API, an open stream sees rotation, a caller without an
entry is denied, and both processes restart (and stop on SIGTERM) without losing identities.

One server and one agent serve the whole module (starting them is most of the cost); the tests
run in file order and each leaves both running, except the last, which stops them. The server
issues 16-second X509-SVIDs (agent and workloads alike) so rotation happens within the test's
bound; the agent syncs every second. Every wait is bounded, and a failing test's report carries
the logs of every process involved.
"""

from __future__ import annotations

import grp
import os
import pwd
import queue
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from processes import (
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
    wait_for,
)

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"
LATE = f"spiffe://{TRUST_DOMAIN}/late"
SVID_TTL_SECONDS = 16
ROTATION_TIMEOUT = 30.0
SYNC_TIMEOUT = 20.0
CALLER_SELECTOR = f"unix:uid:{os.getuid()}"


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """A server with short SVID lifetimes, an agent attested with a join token, and one entry
    (``/web``) for this test process's uid, parented to the agent."""
    root = short_temp_dir()
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(
            root=root, port=port, ca_ttl="1h", default_x509_svid_ttl=f"{SVID_TTL_SECONDS}s"
        ),
        AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
        [(WEB, [CALLER_SELECTOR])],
    )
    try:
        yield deployed
    finally:
        deployed.stop()


def openssl_verify(bundle: Path, svid: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(bundle), str(svid)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_x509_svid_and_bundles_reach_a_workload_and_verify_with_openssl(
    deployment: Deployment,
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = deployment.root / "x509"
    out.mkdir()

    got = run_workload(deployment.agent.endpoint, "x509", str(out))

    assert got["spiffe_id"] == WEB
    assert got["chain_length"] == 1
    assert got["source_spiffe_id"] == WEB
    assert got["bundle_serials"], "the bundle has no X.509 authority"
    assert got["source_bundles"] == {TRUST_DOMAIN: got["bundle_serials"]}
    verified = openssl_verify(out / "bundle.pem", out / "svid.pem")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")
    other_root = deployment.root / "x509" / "other.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(deployment.root / "x509" / "other.key"),
            "-subj",
            "/CN=other",
            "-days",
            "1",
            "-out",
            str(other_root),
        ],
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert openssl_verify(other_root, out / "svid.pem").returncode != 0


def test_jwt_svid_for_two_audiences_validates_only_for_its_audiences(
    deployment: Deployment,
) -> None:
    got = run_workload(
        deployment.agent.endpoint, "jwt", "spiffe://example.org/db", "https://api", "wrong"
    )

    assert got["spiffe_id"] == WEB
    assert got["sub"] == WEB
    assert sorted(got["aud"]) == ["https://api", "spiffe://example.org/db"]
    assert got["validated_spiffe_id"] == WEB
    assert got["wrong_audience"] == "INVALID_ARGUMENT"
    assert got["source_spiffe_id"] == WEB
    assert got["source_aud"] == ["spiffe://example.org/db"]
    assert got["locally_validated_spiffe_id"] == WEB
    assert got["bundle_trust_domains"] == [TRUST_DOMAIN]
    assert got["bundle_key_ids"], "the JWT bundle has no key"


def test_a_caller_without_an_entry_is_denied(deployment: Deployment) -> None:
    if os.geteuid() != 0:
        pytest.skip("running a workload as another uid needs root")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no 'nobody' user")
    assert nobody.pw_uid != os.getuid()
    group = "nogroup" if _group_exists("nogroup") else "nobody"

    got = run_workload(deployment.agent.endpoint, "denied", user="nobody", group=group)

    assert got == {
        "uid": nobody.pw_uid,
        "gid": grp.getgrnam(group).gr_gid,
        "fetch_x509_svid": "PERMISSION_DENIED",
        "fetch_x509_bundles": "PERMISSION_DENIED",
        "fetch_jwt_svid": "PERMISSION_DENIED",
        "fetch_jwt_bundles": "PERMISSION_DENIED",
    }
    # the same socket still serves the caller that has an entry
    assert run_workload(deployment.agent.endpoint, "ids")["spiffe_ids"][0] == WEB


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_an_open_stream_receives_the_rotated_svid(deployment: Deployment) -> None:
    from spiffe import WorkloadApiClient

    updates: queue.Queue[tuple[str, Any]] = queue.Queue()
    client = WorkloadApiClient(socket_path=deployment.agent.endpoint)
    handler = client.stream_x509_contexts(
        on_success=lambda context: updates.put(("update", context.default_svid)),
        on_error=lambda error: updates.put(("error", error)),
        retry_connect=False,
    )
    try:
        kind, first = updates.get(timeout=10)
        assert kind == "update", f"the stream failed: {first!r}"
        assert str(first.spiffe_id) == WEB
        # retry_connect=False: a broken stream reaches on_error, so every update below arrived
        # on the one stream opened above
        deadline = time.monotonic() + ROTATION_TIMEOUT
        second = first
        while second.leaf.serial_number == first.leaf.serial_number:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no new X509-SVID within {ROTATION_TIMEOUT:g}s"
            try:
                kind, second = updates.get(timeout=remaining)
            except queue.Empty:
                pytest.fail(f"no new X509-SVID on the stream within {ROTATION_TIMEOUT:g}s")
            assert kind == "update", f"the stream failed: {second!r}"
    finally:
        handler.cancel()
        client.close()

    assert str(second.spiffe_id) == WEB
    assert second.leaf.serial_number != first.leaf.serial_number
    assert second.leaf.not_valid_after_utc > first.leaf.not_valid_after_utc
    # issued with the server's short default lifetime, counted from (about) now
    assert second.leaf.not_valid_after_utc <= datetime.now(UTC) + timedelta(
        seconds=SVID_TTL_SECONDS + 1
    )


def test_the_agent_restarts_from_its_state_without_the_spent_token(
    deployment: Deployment,
) -> None:
    agent = deployment.agent
    before = run_workload(agent.endpoint, "ids")
    assert before["spiffe_ids"][0] == WEB

    assert agent.terminate() == 0, agent.log()
    assert not agent.socket_path.exists()

    agent.start()  # no join token: the agent resumes from data_dir
    after = run_workload(agent.endpoint, "ids")
    assert after["spiffe_ids"] == before["spiffe_ids"]
    assert deployment.server.agent_ids() == [deployment.agent_id]
    resumed = agent.log()
    assert "agent SVID obtained by attestation" not in resumed
    assert f"spiffe_id={deployment.agent_id}" in _lines_with(resumed, "agent identity ready")

    # the token was spent by the first attestation: a new node cannot use it again
    intruder = AgentProcess(
        AgentSettings(
            root=deployment.root,
            server_port=deployment.server.settings.port,
            bootstrap_bundle=deployment.root / "bootstrap.pem",
            name="intruder",
        )
    )
    deployment.extra.append(intruder)
    intruder.launch(deployment.token)
    code = intruder.wait(timeout=20)
    assert code != 0, intruder.log()
    assert not intruder.socket_path.exists()
    assert deployment.server.agent_ids() == [deployment.agent_id]
    assert run_workload(agent.endpoint, "ids")["spiffe_ids"][0] == WEB


def _lines_with(text: str, needle: str) -> str:
    return "\n".join(line for line in text.splitlines() if needle in line)


def test_the_server_restarts_while_the_agent_keeps_serving(deployment: Deployment) -> None:
    server, agent = deployment.server, deployment.agent
    before = run_workload(agent.endpoint, "ids")

    assert server.terminate() == 0, server.log()
    assert not server.socket_path.exists()
    during = run_workload(agent.endpoint, "ids")
    assert during["spiffe_ids"] == before["spiffe_ids"]

    server.start()
    assert server.agent_ids() == [deployment.agent_id]
    server.create_entry(LATE, deployment.agent_id, CALLER_SELECTOR)

    def synced() -> list[str] | None:
        ids: list[str] = run_workload(agent.endpoint, "ids")["spiffe_ids"]
        return ids if LATE in ids else None

    ids = wait_for("the new entry reaching the workload", synced, SYNC_TIMEOUT, agent.log())
    assert ids[0] == WEB
    assert sorted(ids) == sorted([WEB, LATE])
    assert agent.running


def test_sigterm_stops_both_with_exit_code_zero_and_removes_their_sockets(
    deployment: Deployment,
) -> None:
    server, agent = deployment.server, deployment.agent
    assert agent.running
    assert server.running

    assert agent.terminate() == 0, agent.log()
    assert not agent.socket_path.exists()
    assert "agent stopped" in agent.log()
    assert server.terminate() == 0, server.log()
    assert not server.socket_path.exists()
