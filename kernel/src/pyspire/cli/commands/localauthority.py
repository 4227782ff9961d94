"""``localauthority x509|jwt show|prepare|activate|taint|revoke`` and ``upstreamauthority
taint|revoke``: forced rotation of the server's signing authorities, as SPIRE's commands.

The usual order after a suspected key exposure: ``prepare`` a new authority, ``activate`` it,
``taint`` the old one (consumers replace what it signed) and, once nothing relies on it any
more, ``revoke`` it (it leaves the bundle). ``-output json`` prints the API's response.
"""

from __future__ import annotations

__all__ = ["COMMANDS"]

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import betterproto

from pyspire.catalog import Side
from pyspire.cli.admin_client import (
    AdminClient,
    AdminError,
    add_admin_flags,
    connect,
    message_json,
    print_json,
)
from pyspire.cli.flags import add_flag
from pyspire.cli.printable import printable
from pyspire.cli.registry import CliContext, Command
from pyspire.proto.gen.spire.api.server.localauthority import v1 as la_pb

_SIDES = frozenset({Side.SERVER})

Call = Callable[[la_pb.LocalAuthorityStub, str], Awaitable[betterproto.Message]]


def _expires(seconds: int) -> str:
    """Go's ``time.Time`` in UTC as SPIRE prints it: ``2026-12-08 07:50:00 +0000 UTC``."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _state_lines(state: la_pb.AuthorityState, *, x509: bool) -> list[str]:
    lines = [
        f"  Authority ID: {printable(state.authority_id)}",
        f"  Expires at: {_expires(state.expires_at)}",
    ]
    if not x509:
        return lines
    if state.upstream_authority_subject_key_id:
        upstream = printable(state.upstream_authority_subject_key_id)
        lines.append(f"  Upstream authority Subject Key ID: {upstream}")
    else:
        lines.append("  Upstream authority ID: No upstream authority")
    return lines


def _show_lines(response: Any, kind: str) -> list[str]:
    x509 = kind == "X.509"
    lines: list[str] = []
    for title, state in (
        ("Active", response.active),
        ("Prepared", response.prepared),
        ("Old", response.old),
    ):
        if lines:
            lines.append("")
        lines.append(f"{title} {kind} authority:")
        if betterproto.serialized_on_wire(state):
            lines.extend(_state_lines(state, x509=x509))
        else:
            lines.append(f"  No {title.lower()} {kind} authority found")
    return lines


@dataclass(frozen=True)
class _Action:
    """One ``localauthority`` subcommand: its RPC, the words of its output and errors."""

    name: str
    kind: str  # "X.509" or "JWT"
    verb: str  # "prepare", "activate", ...
    summary: str
    call: Call
    result_field: str = ""
    needs_id: bool = True

    @property
    def past(self) -> str:
        return {"prepare": "Prepared", "activate": "Activated", "taint": "Tainted"}.get(
            self.verb, "Revoked"
        )

    def lines(self, response: Any) -> list[str]:
        if self.verb == "show":
            return _show_lines(response, self.kind)
        state = getattr(response, self.result_field)
        return [
            f"{self.past} {self.kind} authority:",
            *_state_lines(state, x509=self.kind != "JWT"),
        ]


async def _run(
    args: argparse.Namespace,
    context: CliContext,
    call: Callable[[AdminClient], Awaitable[betterproto.Message]],
    failure: str,
    render: Callable[[Any], list[str]],
) -> int:
    async with connect(args.socket_path) as client:
        try:
            with client.errors():
                response = await call(client)
        except AdminError as error:
            raise AdminError(f"{failure}: {error}") from None
    if args.output == "json":
        print_json(context.out, message_json(response))
    else:
        for line in render(response):
            context.out(line)
    return 0


def _handler(action: _Action) -> Callable[[argparse.Namespace, CliContext], Awaitable[int]]:
    async def handle(args: argparse.Namespace, context: CliContext) -> int:
        authority_id = getattr(args, "authority_id", "") or ""
        if action.needs_id and not authority_id:
            raise AdminError("an authority ID is required")
        verb = "get" if action.verb == "show" else action.verb
        noun = f"{action.kind} authorities" if action.verb == "show" else f"{action.kind} authority"

        async def call(client: AdminClient) -> betterproto.Message:
            stub = la_pb.LocalAuthorityStub(client.channel, timeout=client.timeout)
            return await action.call(stub, authority_id)

        return await _run(args, context, call, f"could not {verb} {noun}", action.lines)

    return handle


def _flags(action: _Action) -> Callable[[argparse.ArgumentParser, Side], None]:
    def add(parser: argparse.ArgumentParser, side: Side) -> None:
        add_admin_flags(parser)
        if action.needs_id:
            add_flag(
                parser,
                "authorityID",
                metavar="ID",
                help=f"The authority ID of the {action.kind} authority to {action.verb}",
            )

    return add


def _command(action: _Action) -> Command:
    return Command(
        name=action.name,
        summary=action.summary,
        sides=_SIDES,
        handler=_handler(action),
        add_flags=_flags(action),
    )


_X509 = (
    _Action(
        "show",
        "X.509",
        "show",
        "Shows the local X.509 authorities",
        lambda s, _: s.get_x509_authority_state(la_pb.GetX509AuthorityStateRequest()),
        needs_id=False,
    ),
    _Action(
        "prepare",
        "X.509",
        "prepare",
        "Prepares a new X.509 authority for use by generating a new key and injecting it "
        "into the bundle",
        lambda s, _: s.prepare_x509_authority(la_pb.PrepareX509AuthorityRequest()),
        "prepared_authority",
        needs_id=False,
    ),
    _Action(
        "activate",
        "X.509",
        "activate",
        "Activates a prepared X.509 authority for use, which will cause it to be used for all "
        "X.509 signing operations serviced by this server going forward",
        lambda s, i: s.activate_x509_authority(la_pb.ActivateX509AuthorityRequest(i)),
        "activated_authority",
    ),
    _Action(
        "taint",
        "X.509",
        "taint",
        "Marks the previously active X.509 authority as being tainted",
        lambda s, i: s.taint_x509_authority(la_pb.TaintX509AuthorityRequest(i)),
        "tainted_authority",
    ),
    _Action(
        "revoke",
        "X.509",
        "revoke",
        "Revokes the previously active X.509 authority by removing it from the bundle and "
        "propagating this update throughout the cluster",
        lambda s, i: s.revoke_x509_authority(la_pb.RevokeX509AuthorityRequest(i)),
        "revoked_authority",
    ),
)

_JWT = (
    _Action(
        "show",
        "JWT",
        "show",
        "Shows the local JWT authorities",
        lambda s, _: s.get_jwt_authority_state(la_pb.GetJwtAuthorityStateRequest()),
        needs_id=False,
    ),
    _Action(
        "prepare",
        "JWT",
        "prepare",
        "Prepares a new JWT authority for use by generating a new key and injecting it into "
        "the bundle",
        lambda s, _: s.prepare_jwt_authority(la_pb.PrepareJwtAuthorityRequest()),
        "prepared_authority",
        needs_id=False,
    ),
    _Action(
        "activate",
        "JWT",
        "activate",
        "Activates a prepared JWT authority for use, which will cause it to be used for all "
        "JWT signing operations serviced by this server going forward",
        lambda s, i: s.activate_jwt_authority(la_pb.ActivateJwtAuthorityRequest(i)),
        "activated_authority",
    ),
    _Action(
        "taint",
        "JWT",
        "taint",
        "Marks the previously active JWT authority as being tainted",
        lambda s, i: s.taint_jwt_authority(la_pb.TaintJwtAuthorityRequest(i)),
        "tainted_authority",
    ),
    _Action(
        "revoke",
        "JWT",
        "revoke",
        "Revokes the previously active JWT authority by removing it from the bundle and "
        "propagating this update throughout the cluster",
        lambda s, i: s.revoke_jwt_authority(la_pb.RevokeJwtAuthorityRequest(i)),
        "revoked_authority",
    ),
)


def _upstream_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(
        parser,
        "subjectKeyID",
        metavar="SKID",
        help="The X.509 Subject Key Identifier (or SKID) of the authority's CA certificate of "
        "the upstream X.509 authority",
    )


def _upstream(verb: str, past: str) -> Callable[[argparse.Namespace, CliContext], Awaitable[int]]:
    async def handle(args: argparse.Namespace, context: CliContext) -> int:
        subject_key_id = args.subject_key_id or ""
        if not subject_key_id:
            raise AdminError("the Subject Key ID of the X.509 upstream authority is required")

        async def call(client: AdminClient) -> betterproto.Message:
            stub = la_pb.LocalAuthorityStub(client.channel, timeout=client.timeout)
            if verb == "taint":
                return await stub.taint_x509_upstream_authority(
                    la_pb.TaintX509UpstreamAuthorityRequest(subject_key_id)
                )
            return await stub.revoke_x509_upstream_authority(
                la_pb.RevokeX509UpstreamAuthorityRequest(subject_key_id)
            )

        def render(response: Any) -> list[str]:
            skid = printable(response.upstream_authority_subject_key_id)
            return [f"{past} X.509 upstream authority:", f"  Subject Key ID: {skid}"]

        failure = f"could not {verb} X.509 upstream authority"
        return await _run(args, context, call, failure, render)

    return handle


LOCALAUTHORITY = Command(
    name="localauthority",
    summary="manage the server's local X.509 and JWT authorities (forced rotation)",
    sides=_SIDES,
    subcommands=(
        Command(
            name="x509",
            summary="the local X.509 authorities",
            sides=_SIDES,
            subcommands=tuple(_command(action) for action in _X509),
        ),
        Command(
            name="jwt",
            summary="the local JWT authorities",
            sides=_SIDES,
            subcommands=tuple(_command(action) for action in _JWT),
        ),
    ),
)

UPSTREAMAUTHORITY = Command(
    name="upstreamauthority",
    summary="manage the upstream X.509 authorities that signed the server's CAs",
    sides=_SIDES,
    subcommands=(
        Command(
            name="taint",
            summary="Marks the provided X.509 upstream authority as being tainted",
            sides=_SIDES,
            handler=_upstream("taint", "Tainted"),
            add_flags=_upstream_flags,
        ),
        Command(
            name="revoke",
            summary="Revokes the previously active X.509 upstream authority by removing it "
            "from the bundle and propagating this update throughout the cluster",
            sides=_SIDES,
            handler=_upstream("revoke", "Revoked"),
            add_flags=_upstream_flags,
        ),
    ),
)

COMMANDS: tuple[Command, ...] = (LOCALAUTHORITY, UPSTREAMAUTHORITY)
