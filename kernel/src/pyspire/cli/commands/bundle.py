"""``bundle show|list|set|delete|count``: our trust bundle and the federated ones.

Bundles are printed as PEM (the X.509 authorities, concatenated) or as the SPIFFE bundle
document (``-format spiffe``: a JWK set with the X.509 and JWT authorities, sequence number and
refresh hint). ``-output json`` prints the API's ``Bundle`` message instead, for scripts.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "format_bundle", "parse_bundle"]

import argparse
import asyncio
import sys
from pathlib import Path

from pyspire.catalog import Side
from pyspire.cli.admin_client import (
    AdminError,
    add_admin_flags,
    connect,
    message_json,
    parse_trust_domain,
    plural,
    print_json,
    status_line,
)
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.proto.convert import bundle_from_proto, bundle_to_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import TrustDomain

_FORMATS = ("pem", "spiffe")
_Mode = bundle_pb.BatchDeleteFederatedBundleRequestMode
_MODES = {
    "restrict": _Mode(_Mode.RESTRICT),
    "delete": _Mode(_Mode.DELETE),
    "dissociate": _Mode(_Mode.DISSOCIATE),
}
_SIDES = frozenset({Side.SERVER})
_BANNER = "*" * 40


def format_bundle(message: pb.Bundle, bundle_format: str) -> str:
    """A wire bundle as PEM certificates or as SPIFFE bundle JSON (no trailing newline)."""
    try:
        bundle = bundle_from_proto(message)
        if bundle_format == "spiffe":
            return bundle.to_spiffe_json(indent=4)
        return bundle.to_pem().rstrip("\n")
    except InvalidArgumentError as error:
        raise AdminError(f"the server sent a bundle that cannot be printed: {error}") from None


def parse_bundle(trust_domain: TrustDomain, data: str, bundle_format: str) -> Bundle:
    """The bundle of ``trust_domain`` in ``data`` (PEM certificates or a SPIFFE bundle)."""
    try:
        if bundle_format == "spiffe":
            return Bundle.from_spiffe_json(trust_domain, data)
        return Bundle.from_pem(trust_domain, data)
    except InvalidArgumentError as error:
        raise AdminError(f"invalid bundle ({bundle_format}): {error}") from None


def _add_format_flag(parser: argparse.ArgumentParser) -> None:
    add_flag(
        parser,
        "format",
        choices=_FORMATS,
        default="pem",
        help="bundle format: pem or spiffe (default: pem)",
    )


def _add_show_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    _add_format_flag(parser)


def _add_count_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)


def _add_list_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "id", metavar="TD", help="only the bundle of this trust domain")
    _add_format_flag(parser)


def _add_set_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "id", metavar="TD", required=True, help="the federated trust domain")
    add_flag(
        parser,
        "path",
        metavar="FILE",
        type=Path,
        help="the file holding the bundle (default: standard input)",
    )
    _add_format_flag(parser)


def _add_delete_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "id", metavar="TD", required=True, help="the federated trust domain")
    add_flag(
        parser,
        "mode",
        choices=tuple(_MODES),
        default="restrict",
        help=(
            "what happens to entries federating with it: restrict (refuse while there are "
            "any), dissociate (unlink them) or delete (delete them); default: restrict"
        ),
    )


async def _show(args: argparse.Namespace, context: CliContext) -> int:
    async with connect(args.socket_path) as client:
        with client.errors():
            bundle = await client.bundle.get_bundle(bundle_pb.GetBundleRequest())
    if args.output == "json":
        print_json(context.out, message_json(bundle))
    else:
        context.out(format_bundle(bundle, args.format))
    return 0


async def _list(args: argparse.Namespace, context: CliContext) -> int:
    bundles: list[pb.Bundle] = []
    async with connect(args.socket_path) as client:
        if args.id:
            trust_domain = parse_trust_domain(args.id, "-id")
            with client.errors():
                bundles.append(
                    await client.bundle.get_federated_bundle(
                        bundle_pb.GetFederatedBundleRequest(trust_domain=trust_domain.name)
                    )
                )
        else:
            token = ""
            while True:
                with client.errors():
                    page = await client.bundle.list_federated_bundles(
                        bundle_pb.ListFederatedBundlesRequest(page_token=token)
                    )
                bundles.extend(page.bundles)
                token = page.next_page_token
                if not token:
                    break
    if args.output == "json":
        print_json(
            context.out, message_json(bundle_pb.ListFederatedBundlesResponse(bundles=bundles))
        )
        return 0
    if args.id:
        context.out(format_bundle(bundles[0], args.format))
        return 0
    if not bundles:
        context.out("No federated bundles found")
        return 0
    for index, bundle in enumerate(bundles):
        if index:
            context.out("")
        context.out(_BANNER)
        context.out(f"* {bundle.trust_domain}")
        context.out(_BANNER)
        context.out(format_bundle(bundle, args.format))
    return 0


def _read(path: Path | None) -> str:
    if path is None:
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdminError(f"invalid -path: file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AdminError(f"invalid -path: cannot read {str(path)!r}: {error}") from None


async def _set(args: argparse.Namespace, context: CliContext) -> int:
    trust_domain = parse_trust_domain(args.id, "-id")
    data = await asyncio.to_thread(_read, args.path)
    bundle = parse_bundle(trust_domain, data, args.format)
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.bundle.batch_set_federated_bundle(
                bundle_pb.BatchSetFederatedBundleRequest(bundle=[bundle_to_proto(bundle)])
            )
    if args.output == "json":
        print_json(context.out, message_json(response))
    failed = [result for result in response.results if result.status.code != 0]
    for result in failed:
        context.err(f"{context.prog}: error: {status_line(result.status)}")
    if failed:
        return 1
    if args.output != "json":
        context.out("bundle set.")
    return 0


async def _delete(args: argparse.Namespace, context: CliContext) -> int:
    trust_domain = parse_trust_domain(args.id, "-id")
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.bundle.batch_delete_federated_bundle(
                bundle_pb.BatchDeleteFederatedBundleRequest(
                    trust_domains=[trust_domain.name], mode=_MODES[args.mode]
                )
            )
    if args.output == "json":
        print_json(context.out, message_json(response))
    failed = [result for result in response.results if result.status.code != 0]
    for result in failed:
        context.err(f"{context.prog}: error: {status_line(result.status)}")
    if failed:
        return 1
    if args.output != "json":
        context.out("bundle deleted.")
    return 0


async def _count(args: argparse.Namespace, context: CliContext) -> int:
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.bundle.count_bundles(bundle_pb.CountBundlesRequest())
    if args.output == "json":
        print_json(context.out, message_json(response))
    else:
        context.out(plural(response.count, "bundle"))
    return 0


BUNDLE = Command(
    name="bundle",
    summary="show our trust bundle; list, set, delete and count federated bundles",
    sides=_SIDES,
    subcommands=(
        Command(
            name="show",
            summary="show the server's own trust bundle",
            sides=_SIDES,
            handler=_show,
            add_flags=_add_show_flags,
        ),
        Command(
            name="list",
            summary="list federated bundles",
            sides=_SIDES,
            handler=_list,
            add_flags=_add_list_flags,
        ),
        Command(
            name="set",
            summary="create or replace a federated bundle",
            sides=_SIDES,
            handler=_set,
            add_flags=_add_set_flags,
        ),
        Command(
            name="delete",
            summary="delete a federated bundle",
            sides=_SIDES,
            handler=_delete,
            add_flags=_add_delete_flags,
        ),
        Command(
            name="count",
            summary="count bundles (ours and the federated ones)",
            sides=_SIDES,
            handler=_count,
            add_flags=_add_count_flags,
        ),
    ),
)

COMMANDS: tuple[Command, ...] = (BUNDLE,)
