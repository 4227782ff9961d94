"""The agent across a server outage, as real processes: a restarted agent serves the workload
SVIDs it kept while the server is still down, an SVID that expires during the outage is no
longer served (UNAVAILABLE, which clients retry, never PERMISSION_DENIED), and the agent is back
in sync soon after the server returns.

The tests run in file order on one deployment; the agent syncs every second. The workload
entry's X509-SVIDs live an hour while the agent restarts (a restart on a loaded machine can take
longer than any short lifetime) and :data:`SHORT_SVID_TTL` for the outage that outlives one; the
agent's own SVID lives an hour. The longer outage scenarios live in the reliability suite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from processes import (
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    Deployment,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    join_token_agent_id,
    run_workload,
    short_temp_dir,
    wait_for,
)
from spiffe import WorkloadApiClient
from spiffe.errors import PySpiffeError

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"
WEB_ENTRY_ID = "web"
SHORT_SVID_TTL = 5
"""Seconds; with the server's 10 s backdating, the agent renews such an SVID at every sync, so
one outlives the server by at most this."""
SHORT_LIFETIME = timedelta(seconds=SHORT_SVID_TTL + 10)
"""Not before to not after of such an SVID: its lifetime and the server's backdating."""
EXPIRY_TIMEOUT = SHORT_SVID_TTL + 30.0
"""A deadline for liveness: the expiry itself comes within :data:`SHORT_SVID_TTL`."""
RECOVERY_TIMEOUT = 15.0
CALLER_SELECTOR = f"unix:uid:{os.getuid()}"


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    root = short_temp_dir()
    server = ServerProcess(ServerSettings(root=root, port=free_port()))
    agent = AgentProcess(
        AgentSettings(
            root=root, server_port=server.settings.port, bootstrap_bundle=root / "bootstrap.pem"
        )
    )
    deployed = Deployment(root=root, server=server, agent=agent, token="", agent_id="")
    try:
        server.start()
        server.write_bundle(root / "bootstrap.pem")
        deployed.token = server.generate_token()
        deployed.agent_id = join_token_agent_id(deployed.token)
        _register_web(server, deployed.agent_id, "create", ttl=3600)
        agent.start(join_token=deployed.token)
    except ProcessError as error:
        logs = deployed.logs()
        deployed.stop()
        pytest.fail(f"the deployment did not start: {str(error).splitlines()[0]}\n{logs}")
    except BaseException:
        deployed.stop()
        raise
    try:
        yield deployed
    finally:
        deployed.stop()


def _register_web(server: ServerProcess, agent_id: str, action: str, *, ttl: int) -> None:
    """``entry create`` or ``entry update`` of the workload's entry, with its SVIDs' ``ttl``."""
    server.command(
        "entry",
        action,
        "-entryID",
        WEB_ENTRY_ID,
        "-spiffeID",
        WEB,
        "-parentID",
        agent_id,
        "-selector",
        CALLER_SELECTOR,
        "-x509SVIDTTL",
        str(ttl),
    )


def _served_lifetime(deployment: Deployment) -> timedelta | None:
    """How long the X509-SVID the agent serves the caller lives in all (None when none)."""
    try:
        with WorkloadApiClient(deployment.agent.endpoint) as client:
            leaf = client.fetch_x509_svid().leaf
    except PySpiffeError:
        return None
    return leaf.not_valid_after_utc - leaf.not_valid_before_utc


def _x509_code(deployment: Deployment) -> str:
    return str(run_workload(deployment.agent.endpoint, "denied")["fetch_x509_svid"])


def _serving(deployment: Deployment) -> list[str] | None:
    """The SPIFFE IDs of the X509-SVIDs served to the caller (a fetch in this process: polling
    with a workload process costs an interpreter start a poll); None while there are none."""
    try:
        with WorkloadApiClient(deployment.agent.endpoint) as client:
            svids = client.fetch_x509_svids()
    except PySpiffeError:
        return None
    return [str(svid.spiffe_id) for svid in svids] or None


def test_an_agent_restarted_while_the_server_is_down_serves_its_kept_svids(
    deployment: Deployment,
) -> None:
    server, agent = deployment.server, deployment.agent
    wait_for("a first workload svid", lambda: _serving(deployment), RECOVERY_TIMEOUT, agent.log())
    assert server.terminate() == 0, server.log()
    assert agent.terminate() == 0, agent.log()
    kept = agent.settings.data_dir / "workload-svids.json"
    assert kept.exists()
    assert kept.stat().st_mode & 0o777 == 0o600

    agent.start()  # resumes its identity; the server is still down

    got = run_workload(agent.endpoint, "ids")
    assert got["spiffe_ids"] == [WEB]
    assert "serving the workload svids kept by the last run" in agent.log()


def test_an_agent_with_nothing_kept_answers_unavailable_until_it_syncs(
    deployment: Deployment,
) -> None:
    server, agent = deployment.server, deployment.agent
    assert not server.running
    assert agent.terminate() == 0, agent.log()
    (agent.settings.data_dir / "workload-svids.json").unlink()

    agent.start()  # the first sync fails: nothing to serve yet, but nobody is refused

    assert _x509_code(deployment) == "UNAVAILABLE"
    server.start()
    ids = wait_for(
        "the agent's first sync", lambda: _serving(deployment), RECOVERY_TIMEOUT, agent.log()
    )
    assert ids == [WEB]


def test_an_svid_that_expires_in_the_outage_is_not_served_and_the_agent_recovers(
    deployment: Deployment,
) -> None:
    server, agent = deployment.server, deployment.agent
    assert server.running
    _register_web(server, deployment.agent_id, "update", ttl=SHORT_SVID_TTL)
    wait_for(
        "the agent to serve an svid of the entry's new lifetime",
        lambda: (
            lifetime
            if (lifetime := _served_lifetime(deployment)) is not None and lifetime <= SHORT_LIFETIME
            else None
        ),
        RECOVERY_TIMEOUT,
        agent.log(),
    )
    assert server.terminate() == 0, server.log()

    # Within one lifetime the SVID expires; from then on the caller is told to retry.
    code = wait_for(
        "the svid to expire",
        lambda: code if (code := _x509_code(deployment)) != "OK" else None,
        EXPIRY_TIMEOUT,
        agent.log(),
    )
    assert code == "UNAVAILABLE"

    server.start()
    ids = wait_for(
        "the agent to serve again", lambda: _serving(deployment), RECOVERY_TIMEOUT, agent.log()
    )
    assert ids == [WEB]
