"""``healthcheck`` (agent): ask the agent's Workload API whether it serves identities.

The agent is healthy when FetchX509Bundles answers with at least one bundle: the socket is
open, workload attestation runs, and the agent holds its trust bundle (which it gets only after
attesting to the server). The caller needs an identity for that, as SPIRE's own readiness check
does. ``-shallow`` asks only that the agent answer at all: any gRPC status, PERMISSION_DENIED
included, proves the process is alive, for liveness probes run by a process without an entry.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "HEALTHY_MESSAGE", "check_agent_health"]

import argparse

from pyspire.catalog import Side
from pyspire.cli.admin_client import plural
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.cli.workload_client import (
    Endpoint,
    WorkloadApiError,
    add_workload_flags,
    connect,
    resolve_endpoint,
)

HEALTHY_MESSAGE = "Agent is healthy."


def _add_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_workload_flags(parser)
    add_flag(
        parser,
        "shallow",
        action="store_true",
        help="only check that the agent answers, whatever it answers",
    )
    add_flag(parser, "verbose", action="store_true", help="print the steps of the check")


async def check_agent_health(
    endpoint: Endpoint,
    args: argparse.Namespace,
    context: CliContext,
) -> None:
    """Return when the agent at ``endpoint`` is healthy (alive, with ``args.shallow``); raise
    :class:`~pyspire.cli.workload_client.WorkloadApiError` saying why it is not otherwise."""
    try:
        async with connect(endpoint, args.timeout) as client:
            response = await client.fetch_x509_bundles()
    except WorkloadApiError as error:
        if args.shallow and error.status is not None:
            if args.verbose:
                context.out(f"Agent answered: {error}")
            return
        raise WorkloadApiError(
            f"agent is unhealthy: {error}", status=error.status, reason=error.reason
        ) from None
    if not response.bundles:
        raise WorkloadApiError("agent is unhealthy: it answered without a trust bundle")
    if args.verbose:
        names = ", ".join(sorted(response.bundles))
        context.out(f"Agent answered with {plural(len(response.bundles), 'bundle')}: {names}")


async def _healthcheck(args: argparse.Namespace, context: CliContext) -> int:
    endpoint = resolve_endpoint(args.socket_path, context.environ)
    if args.verbose:
        context.out(f"Checking agent health via {endpoint}")
    await check_agent_health(endpoint, args, context)
    context.out(HEALTHY_MESSAGE)
    return 0


HEALTHCHECK = Command(
    name="healthcheck",
    summary="check that the agent is healthy",
    description=(
        "Ask the agent's Workload API for the trust bundles (FetchX509Bundles). Prints "
        f"'{HEALTHY_MESSAGE}' and exits 0 when it answers with a bundle (with -shallow: when it "
        "answers at all); exits 1 with the reason otherwise."
    ),
    sides=frozenset({Side.AGENT}),
    handler=_healthcheck,
    add_flags=_add_flags,
)

COMMANDS: tuple[Command, ...] = (HEALTHCHECK,)
