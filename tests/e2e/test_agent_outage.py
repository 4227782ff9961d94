"""The agent across a server outage, as real processes: a restarted agent serves the workload
SVIDs it kept while the server is still down, an SVID that expires during the outage is no
longer served (UNAVAILABLE, which clients retry, never PERMISSION_DENIED), and the agent is back
in sync soon after the server returns.

The workload entry's X509-SVIDs live 10 seconds (the agent's own SVID lives an hour, so it
outlasts the outage); the agent syncs every second. The tests run in file order on one
deployment; the longer outage scenarios live in the reliability suite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"
WORKLOAD_SVID_TTL = 10
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
        server.cli(
            "entry",
            "create",
            "-spiffeID",
            WEB,
            "-parentID",
            deployed.agent_id,
            "-selector",
            CALLER_SELECTOR,
            "-x509SVIDTTL",
            str(WORKLOAD_SVID_TTL),
        )
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


def _x509_code(deployment: Deployment) -> str:
    return str(run_workload(deployment.agent.endpoint, "denied")["fetch_x509_svid"])


def _serving(deployment: Deployment) -> list[str] | None:
    try:
        ids: list[str] = run_workload(deployment.agent.endpoint, "ids")["spiffe_ids"]
    except ProcessError:
        return None
    return ids or None


def test_an_agent_restarted_while_the_server_is_down_serves_its_kept_svids(
    deployment: Deployment,
) -> None:
    server, agent = deployment.server, deployment.agent
    wait_for("a first workload svid", lambda: _serving(deployment), 10, agent.log())
    assert server.terminate() == 0, server.log()
    assert agent.terminate() == 0, agent.log()
    kept = agent.settings.data_dir / "workload-svids.json"
    assert kept.exists()
    assert kept.stat().st_mode & 0o777 == 0o600

    agent.start()  # resumes its identity; the server is still down

    got = run_workload(agent.endpoint, "ids")
    assert got["spiffe_ids"] == [WEB]
    assert "serving the workload svids kept by the last run" in agent.log()


def test_an_svid_that_expires_in_the_outage_is_not_served_and_the_agent_recovers(
    deployment: Deployment,
) -> None:
    server, agent = deployment.server, deployment.agent
    assert not server.running

    # Within one lifetime the kept SVID expires; from then on the caller is told to retry.
    code = wait_for(
        "the kept svid to expire",
        lambda: code if (code := _x509_code(deployment)) != "OK" else None,
        WORKLOAD_SVID_TTL + 5,
        agent.log(),
    )
    assert code == "UNAVAILABLE"

    server.start()
    ids = wait_for(
        "the agent to serve again", lambda: _serving(deployment), RECOVERY_TIMEOUT, agent.log()
    )
    assert ids == [WEB]


def test_an_agent_with_nothing_kept_answers_unavailable_until_it_syncs(
    deployment: Deployment,
) -> None:
    server, agent = deployment.server, deployment.agent
    assert server.terminate() == 0, server.log()
    assert agent.terminate() == 0, agent.log()
    (agent.settings.data_dir / "workload-svids.json").unlink()

    agent.start()  # the first sync fails: nothing to serve yet, but nobody is refused

    assert _x509_code(deployment) == "UNAVAILABLE"
    server.start()
    ids = wait_for(
        "the agent's first sync", lambda: _serving(deployment), RECOVERY_TIMEOUT, agent.log()
    )
    assert ids == [WEB]
