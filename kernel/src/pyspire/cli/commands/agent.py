"""``agent list|show|ban|evict|count``: the attested agents, through the Agent API.

``list`` and ``count`` take the filters ListAgents supports: ``-selector`` (with
``-matchSelectorsOn``), ``-attestationType``, ``-banned`` and ``-canReattest``. CountAgents has no
filter, so a filtered ``count`` counts the agents ``list`` would show.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "describe_agent"]

import argparse

from pyspire.catalog import Side
from pyspire.cli.admin_client import (
    AdminClient,
    add_admin_flags,
    connect,
    format_timestamp,
    message_json,
    parse_bool,
    parse_selector,
    parse_spiffe_id,
    plural,
    print_json,
    render_blocks,
    spiffe_id_text,
    write_blocks,
)
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.agent import v1 as agent_pb

_MATCH = {
    "exact": pb.SelectorMatchMatchBehavior(pb.SelectorMatchMatchBehavior.MATCH_EXACT),
    "subset": pb.SelectorMatchMatchBehavior(pb.SelectorMatchMatchBehavior.MATCH_SUBSET),
    "superset": pb.SelectorMatchMatchBehavior(pb.SelectorMatchMatchBehavior.MATCH_SUPERSET),
    "any": pb.SelectorMatchMatchBehavior(pb.SelectorMatchMatchBehavior.MATCH_ANY),
}
_SIDES = frozenset({Side.SERVER})


def describe_agent(agent: pb.Agent) -> list[str]:
    """An agent as SPIRE prints it: ID, attestation type, SVID expiry and serial, flags, and
    one line per selector."""
    rows = [
        ("SPIFFE ID", spiffe_id_text(agent.id)),
        ("Attestation type", agent.attestation_type),
        ("Expiration time", format_timestamp(agent.x509_svid_expires_at)),
        ("Serial number", agent.x509_svid_serial_number),
        ("Can re-attest", "true" if agent.can_reattest else "false"),
        ("Banned", "true" if agent.banned else "false"),
    ]
    if agent.agent_version:
        rows.append(("Agent version", agent.agent_version))
    rows.extend(("Selector", f"{s.type}:{s.value}") for s in agent.selectors)
    return render_blocks(rows)


def _add_id_flag(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "spiffeID", metavar="ID", required=True, help="the agent's SPIFFE ID")


def _add_filter_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(
        parser,
        "selector",
        metavar="TYPE:VALUE",
        action="append",
        default=[],
        help="filter by node selector (repeatable)",
    )
    add_flag(
        parser,
        "matchSelectorsOn",
        choices=tuple(_MATCH),
        default="superset",
        help="how -selector matches: exact, subset, superset or any (default: superset)",
    )
    add_flag(parser, "attestationType", metavar="TYPE", help="filter by attestation type")
    add_flag(
        parser, "banned", metavar="BOOL", type=parse_bool, help="filter by banned (true|false)"
    )
    add_flag(
        parser,
        "canReattest",
        metavar="BOOL",
        type=parse_bool,
        help="filter by whether agents re-attest to renew (true|false)",
    )


def _filter(args: argparse.Namespace) -> agent_pb.ListAgentsRequestFilter:
    message = agent_pb.ListAgentsRequestFilter(
        by_attestation_type=args.attestation_type or "",
        by_banned=args.banned,
        by_can_reattest=args.can_reattest,
    )
    if args.selector:
        message.by_selector_match = pb.SelectorMatch(
            selectors=[parse_selector(text) for text in args.selector],
            match=_MATCH[args.match_selectors_on],
        )
    return message


def _filtered(args: argparse.Namespace) -> bool:
    return bool(
        args.selector
        or args.attestation_type
        or args.banned is not None
        or args.can_reattest is not None
    )


async def _all_agents(
    client: AdminClient, request_filter: agent_pb.ListAgentsRequestFilter
) -> list[pb.Agent]:
    agents: list[pb.Agent] = []
    token = ""
    while True:
        with client.errors():
            page = await client.agent.list_agents(
                agent_pb.ListAgentsRequest(filter=request_filter, page_token=token)
            )
        agents.extend(page.agents)
        token = page.next_page_token
        if not token:
            return agents


def _agent_id(args: argparse.Namespace) -> pb.Spiffeid:
    spiffe_id = parse_spiffe_id(args.spiffe_id, "-spiffeID")
    return pb.Spiffeid(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


async def _list(args: argparse.Namespace, context: CliContext) -> int:
    request_filter = _filter(args)
    async with connect(args.socket_path) as client:
        agents = await _all_agents(client, request_filter)
    if args.output == "json":
        print_json(context.out, message_json(agent_pb.ListAgentsResponse(agents=agents)))
        return 0
    if not agents:
        context.out("No attested agents found")
        return 0
    context.out(f"Found {plural(len(agents), 'attested agent')}:")
    context.out("")
    write_blocks(context.out, [describe_agent(agent) for agent in agents])
    return 0


async def _count(args: argparse.Namespace, context: CliContext) -> int:
    request_filter = _filter(args)
    async with connect(args.socket_path) as client:
        if _filtered(args):
            count = len(await _all_agents(client, request_filter))
        else:
            with client.errors():
                count = (await client.agent.count_agents(agent_pb.CountAgentsRequest())).count
    if args.output == "json":
        print_json(context.out, message_json(agent_pb.CountAgentsResponse(count=count)))
    else:
        context.out(plural(count, "attested agent"))
    return 0


async def _show(args: argparse.Namespace, context: CliContext) -> int:
    agent_id = _agent_id(args)
    async with connect(args.socket_path) as client:
        with client.errors():
            agent = await client.agent.get_agent(agent_pb.GetAgentRequest(id=agent_id))
    if args.output == "json":
        print_json(context.out, message_json(agent))
    else:
        context.out("Found an attested agent given its SPIFFE ID")
        context.out("")
        write_blocks(context.out, [describe_agent(agent)])
    return 0


async def _ban(args: argparse.Namespace, context: CliContext) -> int:
    agent_id = _agent_id(args)
    async with connect(args.socket_path) as client:
        with client.errors():
            await client.agent.ban_agent(agent_pb.BanAgentRequest(id=agent_id))
    if args.output == "json":
        print_json(context.out, {})
    else:
        context.out("Agent banned successfully")
    return 0


async def _evict(args: argparse.Namespace, context: CliContext) -> int:
    agent_id = _agent_id(args)
    async with connect(args.socket_path) as client:
        with client.errors():
            await client.agent.delete_agent(agent_pb.DeleteAgentRequest(id=agent_id))
    if args.output == "json":
        print_json(context.out, {})
    else:
        context.out("Agent evicted successfully")
    return 0


AGENT = Command(
    name="agent",
    summary="list, show, ban, evict and count attested agents",
    sides=_SIDES,
    subcommands=(
        Command(
            name="list",
            summary="list attested agents",
            sides=_SIDES,
            handler=_list,
            add_flags=_add_filter_flags,
        ),
        Command(
            name="show",
            summary="show an attested agent",
            sides=_SIDES,
            handler=_show,
            add_flags=_add_id_flag,
        ),
        Command(
            name="ban",
            summary="ban an agent: its SVID is refused and it may not attest again",
            sides=_SIDES,
            handler=_ban,
            add_flags=_add_id_flag,
        ),
        Command(
            name="evict",
            summary="evict an agent: its node is deleted; it may attest again if allowed",
            sides=_SIDES,
            handler=_evict,
            add_flags=_add_id_flag,
        ),
        Command(
            name="count",
            summary="count attested agents",
            sides=_SIDES,
            handler=_count,
            add_flags=_add_filter_flags,
        ),
    ),
)

COMMANDS: tuple[Command, ...] = (AGENT,)
