"""``token generate``: a one-time join token for an agent, optionally with an alias entry."""

from __future__ import annotations

__all__ = ["COMMANDS"]

import argparse
import asyncio
from pathlib import Path

from pyspire.catalog import Side
from pyspire.cli.admin_client import (
    AdminError,
    add_admin_flags,
    connect,
    format_timestamp,
    message_json,
    parse_spiffe_id,
    parse_ttl,
    print_json,
)
from pyspire.cli.files import PRIVATE_FILE_MODE, write_file
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb

DEFAULT_TTL = 600
"""Seconds a generated token stays valid unless -ttl says otherwise (SPIRE's default)."""


def _add_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(
        parser,
        "spiffeID",
        metavar="ID",
        help="also create an entry giving the agent that attests with the token this ID",
    )
    add_flag(
        parser,
        "ttl",
        metavar="DURATION",
        help=f"how long the token stays valid, e.g. 10m or 600 (default: {DEFAULT_TTL}s)",
    )
    add_flag(
        parser,
        "write",
        metavar="FILE",
        type=Path,
        help="write the token to this file (mode 0600) instead of printing it, for "
        "'pyspire-agent run -joinTokenFile FILE'",
    )


async def _generate(args: argparse.Namespace, context: CliContext) -> int:
    ttl = parse_ttl(args.ttl, "-ttl", minimum=1) if args.ttl is not None else DEFAULT_TTL
    request = agent_pb.CreateJoinTokenRequest(ttl=ttl)
    if args.spiffe_id:
        spiffe_id = parse_spiffe_id(args.spiffe_id, "-spiffeID")
        request.agent_id = pb.Spiffeid(
            trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path
        )
    async with connect(args.socket_path) as client:
        with client.errors():
            token = await client.agent.create_join_token(request)
    if args.write is not None:
        try:
            await asyncio.to_thread(write_file, args.write, token.value + "\n", PRIVATE_FILE_MODE)
        except OSError as error:
            raise AdminError(f"invalid -write: cannot write {str(args.write)!r}: {error}") from None
        if args.output == "json":
            print_json(context.out, {"path": str(args.write), "expires_at": str(token.expires_at)})
        else:
            context.out(f"Token written to {args.write}")
            context.out(f"Expires at {format_timestamp(token.expires_at)}")
        return 0
    if args.output == "json":
        print_json(context.out, message_json(token))
    else:
        context.out(f"Token: {token.value}")
    return 0


TOKEN = Command(
    name="token",
    summary="generate join tokens",
    sides=frozenset({Side.SERVER}),
    subcommands=(
        Command(
            name="generate",
            summary="generate a one-time join token for an agent",
            description=(
                "Generate a join token an agent can attest with once, within -ttl. "
                "With -spiffeID, the attested agent also gets that ID through an alias entry."
            ),
            sides=frozenset({Side.SERVER}),
            handler=_generate,
            add_flags=_add_flags,
        ),
    ),
)

COMMANDS: tuple[Command, ...] = (TOKEN,)
