"""``healthcheck``: ask the server over its admin socket whether it is healthy.

The check is the gRPC health protocol's Check for the whole server (service ``""``). The server
is healthy when it answers SERVING: its CA can sign and its datastore answers. ``-shallow`` only
asks that the server answer at all (any status), for liveness probes that must not fail while
the datastore is briefly slow.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "HEALTHY_MESSAGE"]

import argparse

from pyspire.catalog import Side
from pyspire.cli.admin_client import AdminError, add_admin_flags, connect
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.proto.gen.grpc.health import v1 as health_pb

HEALTHY_MESSAGE = "Server is healthy."

_SERVING = health_pb.HealthCheckResponseServingStatus.SERVING
HEALTHCHECK_TIMEOUT = 10.0
"""Seconds the health check waits for an answer before declaring the server unhealthy."""


def _add_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser, output=False)
    add_flag(
        parser,
        "shallow",
        action="store_true",
        help="only check that the server answers, whatever its status",
    )
    add_flag(parser, "verbose", action="store_true", help="print the steps of the check")


def _status_name(status: int) -> str:
    try:
        return health_pb.HealthCheckResponseServingStatus(status).name or str(status)
    except ValueError:
        return str(status)


async def _healthcheck(args: argparse.Namespace, context: CliContext) -> int:
    if args.verbose:
        context.out(f"Checking server health via {args.socket_path}")
    async with connect(args.socket_path, call_timeout=HEALTHCHECK_TIMEOUT) as client:
        with client.errors():
            response = await client.health.check(health_pb.HealthCheckRequest())
    name = _status_name(response.status)
    if args.verbose:
        context.out(f"Server answered {name}")
    if response.status != _SERVING and not args.shallow:
        raise AdminError(f"server is unhealthy: it answered {name}")
    context.out(HEALTHY_MESSAGE)
    return 0


HEALTHCHECK = Command(
    name="healthcheck",
    summary="check that the server is healthy",
    description=(
        "Ask the server over its admin socket whether it is healthy (gRPC health Check). "
        f"Prints '{HEALTHY_MESSAGE}' and exits 0 when it is SERVING; exits 1 with the reason "
        "otherwise."
    ),
    sides=frozenset({Side.SERVER}),
    handler=_healthcheck,
    add_flags=_add_flags,
)

COMMANDS: tuple[Command, ...] = (HEALTHCHECK,)
