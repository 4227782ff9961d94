"""``pyspire-agent healthcheck`` against a Workload API socket served in the test, with the
agent's health service beside it: the answer depends on the agent, never on the caller."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.catalog import Side
from pyspire.cli import CliContext, run_cli
from pyspire.proto.gen.grpc.health import v1 as health_pb

from .conftest import Agent, run_agent_cli

SERVING_LINE = (
    "Agent answered SERVING: it holds an unexpired agent SVID and its trust bundle, and serves "
    "the Workload API (the answer does not depend on the caller's registration entries)"
)


async def test_healthy(agent: Agent) -> None:
    result = await agent.cli("healthcheck")
    assert (result.status, result.out, result.err) == (0, "Agent is healthy.\n", "")


async def test_a_caller_without_an_entry_sees_a_healthy_agent(agent: Agent) -> None:
    agent.source.publish(identities=())
    result = await agent.cli("healthcheck", "-verbose")
    assert result.status == 0, result.err
    assert result.out.splitlines() == [
        f"Checking agent health via {agent.socket_path}: grpc.health.v1.Health/Check",
        SERVING_LINE,
        "Agent is healthy.",
    ]


async def test_no_bundle_yet_is_unhealthy_unless_shallow(agent: Agent) -> None:
    agent.source.publish(bundle=None)
    result = await agent.cli("healthcheck")
    assert result.status == 1
    assert result.out == ""
    assert result.err == (
        "pyspire-agent: error: agent is unhealthy: it answered NOT_SERVING: it has no valid "
        "agent SVID or no trust bundle yet (its log says which)\n"
    )
    shallow = await agent.cli("healthcheck", "--shallow", "--verbose")
    assert shallow.status == 0, shallow.err
    assert shallow.out.splitlines()[1:] == [
        "Agent answered NOT_SERVING (alive; -shallow asks no more)",
        "Agent is healthy.",
    ]


async def test_a_refused_or_expired_agent_is_unhealthy(agent: Agent) -> None:
    agent.own.revoked = True
    agent.own.revocation_reason = "agent is banned"
    assert (await agent.cli("healthcheck")).status == 1
    agent.own.revoked = False
    assert (await agent.cli("healthcheck")).status == 0
    issued_long_ago = agent.own.svid.expires_at - timedelta(hours=2)
    agent.own.svid = agent.pki.ca.issue(agent.own.svid.spiffe_id, now=issued_long_ago)
    assert (await agent.cli("healthcheck")).status == 1


async def test_the_health_service_knows_the_agent_and_no_other_name(agent: Agent) -> None:
    channel = Channel(path=str(agent.socket_path))
    try:
        stub = health_pb.HealthStub(channel, timeout=5)
        for name in ("", "spire.agent", "pyspire.agent"):
            answer = await stub.check(health_pb.HealthCheckRequest(service=name))
            assert answer.status == health_pb.HealthCheckResponseServingStatus.SERVING
        with pytest.raises(GRPCError) as refused:
            await stub.check(health_pb.HealthCheckRequest(service="spire.server"))
        assert refused.value.status is Status.NOT_FOUND
    finally:
        channel.close()


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
    assert "grpc.health.v1.Health/Check" in agent_help.out
    assert "-shallow" in agent_help.out
    out, err = io.StringIO(), io.StringIO()
    context = CliContext(side=Side.SERVER, prog="pyspire-server", stdout=out, stderr=err)
    assert await asyncio.to_thread(run_cli, ["healthcheck", "-h"], context) == 0
    assert "admin socket" in out.getvalue()
    assert "Workload API" not in out.getvalue()
