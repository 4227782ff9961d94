"""``healthcheck`` (agent): ask the agent whether it serves identities.

The check is ``grpc.health.v1.Health/Check`` on the Workload API socket, as SPIRE's agent
healthcheck does. It is not a Workload API call: the agent does not attest the caller, so the
answer is the same for every caller and a probe (or the README's start-up loop) needs no
registration entry. The agent answers SERVING when it holds an unexpired agent SVID the server
has not refused and its trust bundle; NOT_SERVING otherwise (its log says why). ``-shallow``
asks only that the agent answer at all, for liveness probes; ``-verbose`` says what was asked
and what the answer means.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "HEALTHY_MESSAGE", "check_agent_health"]

import argparse

from pyspire.catalog import Side
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.cli.workload_client import (
    Endpoint,
    WorkloadApiError,
    add_workload_flags,
    connect,
    resolve_endpoint,
)
from pyspire.proto.gen.grpc.health import v1 as health_pb

HEALTHY_MESSAGE = "Agent is healthy."

_SERVING = health_pb.HealthCheckResponseServingStatus.SERVING
_MEANING = (
    "it holds an unexpired agent SVID and its trust bundle, and serves the Workload API "
    "(the answer does not depend on the caller's registration entries)"
)


def _add_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_workload_flags(parser)
    add_flag(
        parser,
        "shallow",
        action="store_true",
        help="only check that the agent answers, whatever it answers",
    )
    add_flag(parser, "verbose", action="store_true", help="say what was checked and found")


def _status_name(status: health_pb.HealthCheckResponseServingStatus) -> str:
    return status.name or str(int(status))


async def check_agent_health(
    endpoint: Endpoint,
    args: argparse.Namespace,
    context: CliContext,
) -> None:
    """Return when the agent at ``endpoint`` is healthy (alive, with ``args.shallow``); raise
    :class:`~pyspire.cli.workload_client.WorkloadApiError` saying why it is not otherwise."""
    try:
        async with connect(endpoint, args.timeout) as client:
            status = await client.check_health()
    except WorkloadApiError as error:
        if args.shallow and error.status is not None:
            if args.verbose:
                context.out(f"Agent answered: {error}")
            return
        raise WorkloadApiError(
            f"agent is unhealthy: {error}", status=error.status, reason=error.reason
        ) from None
    name = _status_name(status)
    if status == _SERVING:
        if args.verbose:
            context.out(f"Agent answered {name}: {_MEANING}")
        return
    if args.shallow:
        if args.verbose:
            context.out(f"Agent answered {name} (alive; -shallow asks no more)")
        return
    raise WorkloadApiError(
        f"agent is unhealthy: it answered {name}: it has no valid agent SVID or no trust "
        "bundle yet (its log says which)"
    )


async def _healthcheck(args: argparse.Namespace, context: CliContext) -> int:
    endpoint = resolve_endpoint(args.socket_path, context.environ)
    if args.verbose:
        context.out(f"Checking agent health via {endpoint}: grpc.health.v1.Health/Check")
    await check_agent_health(endpoint, args, context)
    context.out(HEALTHY_MESSAGE)
    return 0


HEALTHCHECK = Command(
    name="healthcheck",
    summary="check that the agent is healthy",
    description=(
        "Ask the agent over its Workload API socket whether it serves identities "
        "(grpc.health.v1.Health/Check; the caller needs no registration entry). Prints "
        f"'{HEALTHY_MESSAGE}' and exits 0 when it is SERVING (with -shallow: when it answers "
        "at all); exits 1 with the reason otherwise."
    ),
    sides=frozenset({Side.AGENT}),
    handler=_healthcheck,
    add_flags=_add_flags,
)

COMMANDS: tuple[Command, ...] = (HEALTHCHECK,)
