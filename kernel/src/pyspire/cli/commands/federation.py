"""``federation create|list|show|update|delete|refresh``: federation relationships, as SPIRE's
``spire-server federation``.

``create`` and ``update`` take one relationship from flags or many from ``-data`` (a JSON file,
``-`` for standard input, in the TrustDomain API's JSON form:
``{"federation_relationships": [{"trust_domain": ..., "bundle_endpoint_url": ...,
"https_spiffe": {"endpoint_spiffe_id": ...}, "trust_domain_bundle": {...}}]}``).
``-trustDomainBundlePath`` bootstraps the trust domain's bundle (PEM or SPIFFE, by
``-trustDomainBundleFormat``), which an ``https_spiffe`` endpoint needs to be authenticated.
"""

from __future__ import annotations

__all__ = ["COMMANDS"]

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import betterproto

from pyspire.catalog import Side
from pyspire.cli.admin_client import (
    AdminClient,
    AdminError,
    add_admin_flags,
    connect,
    message_json,
    parse_trust_domain,
    plural,
    print_json,
    status_line,
)
from pyspire.cli.commands.bundle import parse_bundle
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command, CommandHandler
from pyspire.proto.convert import bundle_to_proto
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.trustdomain import v1 as td_pb

_SIDES = frozenset({Side.SERVER})
_PROFILES = ("https_spiffe", "https_web")


def _stub(client: AdminClient) -> td_pb.TrustDomainStub:
    return td_pb.TrustDomainStub(client.channel, timeout=client.timeout)


def _add_write_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(
        parser, "trustDomain", dest="trust_domain", metavar="TD", help="the federated trust domain"
    )
    add_flag(
        parser,
        "bundleEndpointURL",
        dest="bundle_endpoint_url",
        metavar="URL",
        help="its bundle endpoint (https)",
    )
    add_flag(
        parser,
        "bundleEndpointProfile",
        dest="bundle_endpoint_profile",
        choices=_PROFILES,
        default="https_spiffe",
        help="how the endpoint authenticates: https_spiffe or https_web (default: https_spiffe)",
    )
    add_flag(
        parser,
        "endpointSpiffeID",
        dest="endpoint_spiffe_id",
        metavar="ID",
        help="the SPIFFE ID of the endpoint (https_spiffe)",
    )
    add_flag(
        parser,
        "trustDomainBundlePath",
        dest="trust_domain_bundle_path",
        metavar="FILE",
        type=Path,
        help="the trust domain's bundle, stored with the relationship",
    )
    add_flag(
        parser,
        "trustDomainBundleFormat",
        dest="trust_domain_bundle_format",
        choices=("pem", "spiffe"),
        default="pem",
        help="format of -trustDomainBundlePath: pem or spiffe (default: pem)",
    )
    add_flag(parser, "data", metavar="FILE", help="relationships as JSON ('-': standard input)")


def _add_id_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "id", metavar="TD", required=True, help="the federated trust domain")


def _add_show_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(
        parser,
        "trustDomain",
        dest="trust_domain",
        metavar="TD",
        required=True,
        help="the trust domain",
    )


def _add_list_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)


def _read_text(path: str | Path, flag: str) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AdminError(f"invalid {flag}: cannot read {str(path)!r}: {error}") from None


def _from_data(text: str) -> list[pb.FederationRelationship]:
    try:
        document = json.loads(text)
        if not isinstance(document, dict):
            raise TypeError("expected a JSON object")
        message = td_pb.ListFederationRelationshipsResponse().from_dict(document)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise AdminError(f"invalid -data: {error}") from None
    if not message.federation_relationships:
        raise AdminError("invalid -data: no federation_relationships")
    return list(message.federation_relationships)


def _from_flags(args: argparse.Namespace) -> pb.FederationRelationship:
    if not args.trust_domain:
        raise AdminError("invalid -trustDomain: required without -data")
    if not args.bundle_endpoint_url:
        raise AdminError("invalid -bundleEndpointURL: required without -data")
    trust_domain = parse_trust_domain(args.trust_domain, "-trustDomain")
    message = pb.FederationRelationship(
        trust_domain=trust_domain.name, bundle_endpoint_url=args.bundle_endpoint_url
    )
    if args.bundle_endpoint_profile == "https_web":
        if args.endpoint_spiffe_id:
            raise AdminError("invalid -endpointSpiffeID: not used by the https_web profile")
        message.https_web = pb.HttpsWebProfile()
    else:
        if not args.endpoint_spiffe_id:
            raise AdminError("invalid -endpointSpiffeID: required by the https_spiffe profile")
        message.https_spiffe = pb.HttpsspiffeProfile(endpoint_spiffe_id=args.endpoint_spiffe_id)
    if args.trust_domain_bundle_path is not None:
        text = _read_text(args.trust_domain_bundle_path, "-trustDomainBundlePath")
        bundle = parse_bundle(trust_domain, text, args.trust_domain_bundle_format)
        message.trust_domain_bundle = bundle_to_proto(bundle)
    return message


async def _relationships(args: argparse.Namespace) -> list[pb.FederationRelationship]:
    if args.data:
        return _from_data(await asyncio.to_thread(_read_text, args.data, "-data"))
    return [await asyncio.to_thread(_from_flags, args)]


def _print(context: CliContext, relationship: pb.FederationRelationship) -> None:
    context.out(f"Trust domain              : {relationship.trust_domain}")
    context.out(f"Bundle endpoint URL       : {relationship.bundle_endpoint_url}")
    group, _ = betterproto.which_one_of(relationship, "bundle_endpoint_profile")
    context.out(f"Bundle endpoint profile   : {group}")
    if group == "https_spiffe":
        context.out(f"Endpoint SPIFFE ID        : {relationship.https_spiffe.endpoint_spiffe_id}")


def _report(
    context: CliContext,
    args: argparse.Namespace,
    response: betterproto.Message,
    results: Sequence[tuple[pb.Status, pb.FederationRelationship | None]],
) -> int:
    if args.output == "json":
        print_json(context.out, message_json(response))
    failed = 0
    for status, relationship in results:
        if status.code != 0:
            failed += 1
            context.err(f"{context.prog}: error: {status_line(status)}")
        elif args.output != "json" and relationship is not None:
            context.out("")
            _print(context, relationship)
    return 1 if failed else 0


async def _create(args: argparse.Namespace, context: CliContext) -> int:
    relationships = await _relationships(args)
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await _stub(client).batch_create_federation_relationship(
                td_pb.BatchCreateFederationRelationshipRequest(
                    federation_relationship=relationships
                )
            )
    results = [(r.status, r.federation_relationship) for r in response.results]
    return _report(context, args, response, results)


async def _update(args: argparse.Namespace, context: CliContext) -> int:
    relationships = await _relationships(args)
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await _stub(client).batch_update_federation_relationship(
                td_pb.BatchUpdateFederationRelationshipRequest(
                    federation_relationships=relationships
                )
            )
    results = [(r.status, r.federation_relationship) for r in response.results]
    return _report(context, args, response, results)


async def _list(args: argparse.Namespace, context: CliContext) -> int:
    found: list[pb.FederationRelationship] = []
    async with connect(args.socket_path) as client:
        token = ""
        while True:
            with client.errors():
                page = await _stub(client).list_federation_relationships(
                    td_pb.ListFederationRelationshipsRequest(page_token=token)
                )
            found.extend(page.federation_relationships)
            token = page.next_page_token
            if not token:
                break
    if args.output == "json":
        listing = td_pb.ListFederationRelationshipsResponse(federation_relationships=found)
        print_json(context.out, message_json(listing))
        return 0
    context.out(f"Found {plural(len(found), 'federation relationship')}")
    for relationship in found:
        context.out("")
        _print(context, relationship)
    return 0


async def _show(args: argparse.Namespace, context: CliContext) -> int:
    trust_domain = parse_trust_domain(args.trust_domain, "-trustDomain")
    async with connect(args.socket_path) as client:
        with client.errors():
            relationship = await _stub(client).get_federation_relationship(
                td_pb.GetFederationRelationshipRequest(trust_domain=trust_domain.name)
            )
    if args.output == "json":
        print_json(context.out, message_json(relationship))
        return 0
    context.out("Found a federation relationship with trust domain " + trust_domain.name)
    context.out("")
    _print(context, relationship)
    return 0


async def _delete(args: argparse.Namespace, context: CliContext) -> int:
    trust_domain = parse_trust_domain(args.id, "-id")
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await _stub(client).batch_delete_federation_relationship(
                td_pb.BatchDeleteFederationRelationshipRequest(trust_domains=[trust_domain.name])
            )
    code = _report(context, args, response, [(r.status, None) for r in response.results])
    if code == 0 and args.output != "json":
        context.out("federation relationship deleted.")
    return code


async def _refresh(args: argparse.Namespace, context: CliContext) -> int:
    trust_domain = parse_trust_domain(args.id, "-id")
    async with connect(args.socket_path) as client:
        with client.errors():
            await _stub(client).refresh_bundle(
                td_pb.RefreshBundleRequest(trust_domain=trust_domain.name)
            )
    if args.output != "json":
        context.out("Bundle refreshed")
    else:
        print_json(context.out, {})
    return 0


def _command(
    name: str,
    summary: str,
    handler: CommandHandler,
    add_flags: Callable[[argparse.ArgumentParser, Side], None],
) -> Command:
    return Command(name=name, summary=summary, sides=_SIDES, handler=handler, add_flags=add_flags)


FEDERATION = Command(
    name="federation",
    summary="create, list, show, update and delete federation relationships; refresh bundles",
    sides=_SIDES,
    subcommands=(
        _command("create", "create federation relationships", _create, _add_write_flags),
        _command("list", "list federation relationships", _list, _add_list_flags),
        _command("show", "show one federation relationship", _show, _add_show_flags),
        _command("update", "update federation relationships", _update, _add_write_flags),
        _command("delete", "delete a federation relationship", _delete, _add_id_flags),
        _command("refresh", "fetch a federated bundle now", _refresh, _add_id_flags),
    ),
)

COMMANDS: tuple[Command, ...] = (FEDERATION,)
