"""``pyspire-agent healthcheck`` against a Workload API served in the test."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from pyspire.catalog import Side
from pyspire.cli import CliContext, run_cli

from .conftest import Agent, run_agent_cli


async def test_healthy(agent: Agent) -> None:
    result = await agent.cli("healthcheck")
    assert (result.status, result.out, result.err) == (0, "Agent is healthy.\n", "")


async def test_verbose(agent: Agent) -> None:
    result = await agent.cli("healthcheck", "-verbose")
    assert result.status == 0, result.err
    assert result.out.splitlines() == [
        f"Checking agent health via {agent.socket_path}",
        "Agent answered with 1 bundle: spiffe://example.org",
        "Agent is healthy.",
    ]


async def test_no_identity_is_unhealthy_unless_shallow(agent: Agent) -> None:
    agent.source.publish(identities=())
    result = await agent.cli("healthcheck")
    assert result.status == 1
    assert result.out == ""
    assert result.err == (
        "pyspire-agent: error: agent is unhealthy: no identity issued (permission denied)\n"
    )
    shallow = await agent.cli("healthcheck", "--shallow", "--verbose")
    assert shallow.status == 0, shallow.err
    assert shallow.out.splitlines() == [
        f"Checking agent health via {agent.socket_path}",
        "Agent answered: no identity issued (permission denied)",
        "Agent is healthy.",
    ]


async def test_no_bundle_yet_is_unhealthy(agent: Agent) -> None:
    agent.source.publish(bundle=None)
    result = await agent.cli("healthcheck")
    assert result.status == 1
    assert result.err == (
        "pyspire-agent: error: agent is unhealthy: agent has no trust bundle yet (unavailable)\n"
    )


async def test_no_agent_is_unhealthy_even_shallow(tmp_path: Path) -> None:
    missing = tmp_path / "api.sock"
    for flags in ((), ("-shallow",)):
        result = await run_agent_cli("healthcheck", "-socketPath", str(missing), *flags)
        assert result.status == 1
        assert result.err == (
            "pyspire-agent: error: agent is unhealthy: cannot reach the agent at "
            f"{missing}: no such socket\n"
        )


async def test_environment_socket(agent: Agent) -> None:
    result = await run_agent_cli(
        "healthcheck", environ={"SPIFFE_ENDPOINT_SOCKET": f"unix:{agent.socket_path}"}
    )
    assert result.status == 0, result.err


async def test_each_side_has_its_own_healthcheck() -> None:
    agent_help = await run_agent_cli("healthcheck", "-h")
    assert agent_help.status == 0
    assert "FetchX509Bundles" in agent_help.out
    assert "-shallow" in agent_help.out
    out, err = io.StringIO(), io.StringIO()
    context = CliContext(side=Side.SERVER, prog="pyspire-server", stdout=out, stderr=err)
    assert await asyncio.to_thread(run_cli, ["healthcheck", "-h"], context) == 0
    assert "admin socket" in out.getvalue()
    assert "FetchX509Bundles" not in out.getvalue()
