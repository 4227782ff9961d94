"""``entry create|update|show|delete|count``: registration entries through the Entry API.

Flags are SPIRE's (``-spiffeID``, ``-parentID``, ``-selector`` ...). ``create`` and ``update``
take one entry from flags or many from ``-data`` (a JSON document ``{"entries": [...]}`` in the
published ``spire.api.types.Entry`` JSON shape, ``-`` for standard input). Batch calls report
every entry: successes on standard output, each failure as one line on standard error, and the
command exits 1 when any entry failed. ``show`` and ``count`` take SPIRE's filters.

``-output json`` prints the API response: the Batch*EntryResponse of ``create``/``update``/
``delete``, the CountEntriesResponse of ``count``, and for ``show`` always a
ListEntriesResponse (``{"entries": [...]}``, all pages), with ``-entryID`` too, so scripts
read one shape.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "entries_from_document", "entry_filter"]

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyspire.catalog import Side
from pyspire.cli.admin_client import (
    AdminError,
    add_admin_flags,
    connect,
    describe_entry,
    message_json,
    parse_selector,
    parse_spiffe_id,
    parse_trust_domain,
    plural,
    print_json,
    spiffe_id_text,
    status_line,
    write_blocks,
)
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, server_id

_SelectorMatch = pb.SelectorMatchMatchBehavior
_FederatesMatch = pb.FederatesWithMatchMatchBehavior
_MATCH = {
    "exact": _SelectorMatch(_SelectorMatch.MATCH_EXACT),
    "subset": _SelectorMatch(_SelectorMatch.MATCH_SUBSET),
    "superset": _SelectorMatch(_SelectorMatch.MATCH_SUPERSET),
    "any": _SelectorMatch(_SelectorMatch.MATCH_ANY),
}
_FEDERATES_MATCH = {
    "exact": _FederatesMatch(_FederatesMatch.MATCH_EXACT),
    "subset": _FederatesMatch(_FederatesMatch.MATCH_SUBSET),
    "superset": _FederatesMatch(_FederatesMatch.MATCH_SUPERSET),
    "any": _FederatesMatch(_FederatesMatch.MATCH_ANY),
}
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

# -- flags ------------------------------------------------------------------------------------


def _add_entry_spec_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(
        parser, "entryID", metavar="ID", help="the entry ID (create: optional; update: required)"
    )
    add_flag(parser, "spiffeID", metavar="ID", help="the SPIFFE ID the entry grants")
    add_flag(parser, "parentID", metavar="ID", help="the SPIFFE ID of the entry's parent")
    add_flag(
        parser,
        "selector",
        metavar="TYPE:VALUE",
        action="append",
        default=[],
        help="a selector the workload must have (repeatable), e.g. unix:uid:1000",
    )
    add_flag(
        parser,
        "node",
        action="store_true",
        help="a node entry: the parent is spiffe://<trust domain>/spire/server",
    )
    add_flag(parser, "admin", action="store_true", help="the SPIFFE ID may administer the server")
    add_flag(parser, "downstream", action="store_true", help="the SPIFFE ID is a downstream server")
    add_flag(
        parser, "dns", metavar="NAME", action="append", default=[], help="a DNS name (repeatable)"
    )
    add_flag(
        parser,
        "federatesWith",
        metavar="TD",
        action="append",
        default=[],
        help="a trust domain whose bundle workloads also receive (repeatable)",
    )
    add_flag(
        parser,
        "x509SVIDTTL",
        kebab="x509-svid-ttl",
        metavar="SECONDS",
        type=int,
        default=0,
        help="X509-SVID lifetime in seconds (default: the server's)",
    )
    add_flag(
        parser,
        "jwtSVIDTTL",
        kebab="jwt-svid-ttl",
        metavar="SECONDS",
        type=int,
        default=0,
        help="JWT-SVID lifetime in seconds (default: the server's)",
    )
    add_flag(
        parser,
        "entryExpiry",
        metavar="UNIX_SECONDS",
        type=int,
        default=0,
        help="when the entry expires, in seconds since the epoch (default: never)",
    )
    add_flag(parser, "storeSVID", action="store_true", help="issue the SVID to an SVID store")
    add_flag(parser, "hint", metavar="TEXT", default="", help="a hint for workloads")
    add_flag(
        parser,
        "data",
        metavar="FILE",
        help='a JSON file of entries ({"entries": [...]}); "-" reads standard input',
    )


def _add_filter_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "entryID", metavar="ID", help="only the entry with this ID")
    add_flag(parser, "spiffeID", metavar="ID", help="only entries with this SPIFFE ID")
    add_flag(parser, "parentID", metavar="ID", help="only entries with this parent ID")
    add_flag(
        parser,
        "selector",
        metavar="TYPE:VALUE",
        action="append",
        default=[],
        help="filter by selector (repeatable)",
    )
    add_flag(
        parser,
        "matchSelectorsOn",
        choices=tuple(_MATCH),
        default="superset",
        help="how -selector matches: exact, subset, superset or any (default: superset)",
    )
    add_flag(
        parser,
        "federatesWith",
        metavar="TD",
        action="append",
        default=[],
        help="filter by federated trust domain (repeatable)",
    )
    add_flag(
        parser,
        "matchFederatesWithOn",
        choices=tuple(_FEDERATES_MATCH),
        default="superset",
        help="how -federatesWith matches: exact, subset, superset or any (default: superset)",
    )
    add_flag(parser, "hint", metavar="TEXT", help="only entries with this hint")


def _add_delete_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    add_flag(parser, "entryID", metavar="ID", required=True, help="the ID of the entry to delete")


# -- building entries -------------------------------------------------------------------------


def _wire_id(spiffe_id: SpiffeId) -> pb.Spiffeid:
    return pb.Spiffeid(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


def _uses_entry_flags(args: argparse.Namespace) -> bool:
    return bool(
        args.entry_id
        or args.spiffe_id
        or args.parent_id
        or args.selector
        or args.node
        or args.admin
        or args.downstream
        or args.dns
        or args.federates_with
        or args.x509_svid_ttl
        or args.jwt_svid_ttl
        or args.entry_expiry
        or args.store_svid
        or args.hint
    )


def _entry_from_flags(args: argparse.Namespace, *, update: bool) -> pb.Entry:
    """One entry from the command line; errors name the flag at fault."""
    if update and not args.entry_id:
        raise AdminError("missing -entryID: the ID of the entry to update is required")
    if not args.spiffe_id:
        raise AdminError("missing -spiffeID: a SPIFFE ID is required")
    spiffe_id = parse_spiffe_id(args.spiffe_id, "-spiffeID")
    if args.node and args.parent_id:
        raise AdminError("-parentID and -node are mutually exclusive: give one of them")
    if args.node:
        parent_id = server_id(spiffe_id.trust_domain)
    elif args.parent_id:
        parent_id = parse_spiffe_id(args.parent_id, "-parentID")
    else:
        raise AdminError("missing -parentID: a parent ID is required unless -node is set")
    if not args.selector:
        raise AdminError("missing -selector: at least one selector is required")
    for flag, value, limit in (
        ("-x509SVIDTTL", args.x509_svid_ttl, _INT32_MAX),
        ("-jwtSVIDTTL", args.jwt_svid_ttl, _INT32_MAX),
        ("-entryExpiry", args.entry_expiry, _INT64_MAX),
    ):
        if value < 0 or value > limit:
            raise AdminError(f"invalid {flag}: {value} is out of range (0 to {limit})")
    federates_with = [
        parse_trust_domain(name, "-federatesWith").name for name in args.federates_with
    ]
    return pb.Entry(
        id=args.entry_id or "",
        spiffe_id=_wire_id(spiffe_id),
        parent_id=_wire_id(parent_id),
        selectors=[parse_selector(text) for text in args.selector],
        x509_svid_ttl=args.x509_svid_ttl,
        jwt_svid_ttl=args.jwt_svid_ttl,
        federates_with=federates_with,
        admin=args.admin,
        downstream=args.downstream,
        expires_at=args.entry_expiry,
        dns_names=list(args.dns),
        store_svid=args.store_svid,
        hint=args.hint,
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_STRING_FIELDS = ("id", "hint")
_BOOL_FIELDS = ("admin", "downstream", "store_svid")
_INT_FIELDS = {
    "x509_svid_ttl": _INT32_MAX,
    "jwt_svid_ttl": _INT32_MAX,
    "expires_at": _INT64_MAX,
}
_ID_FIELDS = ("spiffe_id", "parent_id")
_LIST_FIELDS = ("selectors", "federates_with", "dns_names")
_READ_ONLY_FIELDS = ("revision_number", "created_at", "additional_attributes")
_KNOWN_FIELDS = {
    spelling: name
    for name in (
        *_STRING_FIELDS,
        *_BOOL_FIELDS,
        *_INT_FIELDS,
        *_ID_FIELDS,
        *_LIST_FIELDS,
        *_READ_ONLY_FIELDS,
    )
    for spelling in (name, _camel(name))
}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _json_id(value: object, where: str) -> pb.Spiffeid:
    if isinstance(value, str):
        try:
            return _wire_id(SpiffeId.parse(value))
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"{where}: {error}") from None
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"{where}: expected an object with trust_domain and path, found {_type_name(value)}"
        )
    unknown = sorted(set(value) - {"trust_domain", "trustDomain", "path"})
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown field {unknown[0]!r}")
    trust_domain = value.get("trust_domain", value.get("trustDomain", ""))
    path = value.get("path", "")
    if not isinstance(trust_domain, str) or not isinstance(path, str):
        raise InvalidArgumentError(f"{where}: trust_domain and path must be strings")
    try:
        return _wire_id(SpiffeId.from_path(trust_domain, path))
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"{where}: {error}") from None


def _json_int(value: object, where: str, limit: int) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{where}: expected an integer, found a boolean")
    if isinstance(value, str):
        try:
            number = int(value, 10)
        except ValueError:
            raise InvalidArgumentError(f"{where}: {value!r} is not an integer") from None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise InvalidArgumentError(f"{where}: expected an integer, found {_type_name(value)}")
    if number < 0 or number > limit:
        raise InvalidArgumentError(f"{where}: {number} is out of range (0 to {limit})")
    return number


def _json_strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{where}: expected an array, found {_type_name(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidArgumentError(
                f"{where}[{index}]: expected a string, found {_type_name(item)}"
            )
    return list(value)


def _json_selectors(value: object, where: str) -> list[pb.Selector]:
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{where}: expected an array, found {_type_name(value)}")
    selectors = []
    for index, item in enumerate(value):
        place = f"{where}[{index}]"
        if isinstance(item, str):
            try:
                selector = Selector.parse(item)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"{place}: {error}") from None
        elif isinstance(item, Mapping):
            unknown = sorted(set(item) - {"type", "value"})
            if unknown:
                raise InvalidArgumentError(f"{place}: unknown field {unknown[0]!r}")
            kind, text = item.get("type"), item.get("value")
            if not isinstance(kind, str) or not isinstance(text, str):
                raise InvalidArgumentError(f"{place}: type and value must be strings")
            try:
                selector = Selector(kind, text)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"{place}: {error}") from None
        else:
            raise InvalidArgumentError(
                f"{place}: expected an object with type and value, found {_type_name(item)}"
            )
        selectors.append(pb.Selector(type=selector.type, value=selector.value))
    return selectors


def _json_entry(item: object, where: str) -> pb.Entry:
    if not isinstance(item, Mapping):
        raise InvalidArgumentError(f"{where}: expected an object, found {_type_name(item)}")
    entry = pb.Entry()
    for key, value in item.items():
        name = _KNOWN_FIELDS.get(key)
        place = f"{where}.{name or key}"
        if name is None:
            raise InvalidArgumentError(f"{place}: unknown field")
        if name in _READ_ONLY_FIELDS:
            continue
        if name in _STRING_FIELDS:
            if not isinstance(value, str):
                raise InvalidArgumentError(f"{place}: expected a string, found {_type_name(value)}")
            setattr(entry, name, value)
        elif name in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise InvalidArgumentError(
                    f"{place}: expected a boolean, found {_type_name(value)}"
                )
            setattr(entry, name, value)
        elif name in _INT_FIELDS:
            setattr(entry, name, _json_int(value, place, _INT_FIELDS[name]))
        elif name in _ID_FIELDS:
            setattr(entry, name, _json_id(value, place))
        elif name == "selectors":
            entry.selectors = _json_selectors(value, place)
        elif name == "federates_with":
            entry.federates_with = _json_strings(value, place)
        else:
            entry.dns_names = _json_strings(value, place)
    return entry


def entries_from_document(document: object) -> list[pb.Entry]:
    """The entries of a ``-data`` document: ``{"entries": [Entry, ...]}``.

    Each entry uses the ``spire.api.types.Entry`` JSON mapping (``.proto`` or lowerCamel field
    names; IDs as ``{"trust_domain", "path"}`` objects or ``spiffe://`` strings; selectors as
    ``{"type", "value"}`` objects or ``type:value`` strings). Read-only fields
    (``revision_number``, ``created_at``) are ignored. Anything else unexpected raises
    :class:`InvalidArgumentError` naming the place (``entries[1].selectors[0]``).
    """
    if not isinstance(document, Mapping):
        raise InvalidArgumentError(
            f'expected an object {{"entries": [...]}}, found {_type_name(document)}'
        )
    unknown = sorted(set(document) - {"entries"})
    if unknown:
        raise InvalidArgumentError(f"unknown field {unknown[0]!r}: only 'entries' is expected")
    items = document.get("entries")
    if items is None:
        raise InvalidArgumentError("'entries' is missing")
    if not isinstance(items, list):
        raise InvalidArgumentError(f"'entries' must be an array, found {_type_name(items)}")
    if not items:
        raise InvalidArgumentError("'entries' is empty")
    return [_json_entry(item, f"entries[{index}]") for index, item in enumerate(items)]


def _read_data(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdminError(f"invalid -data: file {source!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AdminError(f"invalid -data: cannot read {source!r}: {error}") from None


async def _load_data(source: str) -> list[pb.Entry]:
    text = await asyncio.to_thread(_read_data, source)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise AdminError(
            f"invalid -data: not JSON: {error.msg.lower()} at line {error.lineno} "
            f"column {error.colno}"
        ) from None
    try:
        return entries_from_document(document)
    except InvalidArgumentError as error:
        raise AdminError(f"invalid -data: {error}") from None


async def _requested_entries(args: argparse.Namespace, *, update: bool) -> list[pb.Entry]:
    if args.data is not None:
        if _uses_entry_flags(args):
            raise AdminError("-data cannot be combined with flags describing an entry")
        entries = await _load_data(args.data)
        if update:
            for index, entry in enumerate(entries):
                if not entry.id:
                    raise AdminError(f"invalid -data: entries[{index}].id is required to update")
        return entries
    return [_entry_from_flags(args, update=update)]


# -- batch results ----------------------------------------------------------------------------


def _report_batch(
    context: CliContext,
    args: argparse.Namespace,
    response: entry_pb.BatchCreateEntryResponse | entry_pb.BatchUpdateEntryResponse,
    requested: Sequence[pb.Entry],
    verb: str,
) -> int:
    failed = 0
    blocks: list[list[str]] = []
    results: Sequence[
        entry_pb.BatchCreateEntryResponseResult | entry_pb.BatchUpdateEntryResponseResult
    ] = response.results
    for index, result in enumerate(results):
        if result.status.code == 0:
            blocks.append(describe_entry(result.entry))
            continue
        failed += 1
        entry = requested[index] if index < len(requested) else pb.Entry()
        name = entry.id or spiffe_id_text(entry.spiffe_id) or f"#{index + 1}"
        context.err(
            f"{context.prog}: error: failed to {verb} entry {index + 1} ({name}): "
            f"{status_line(result.status)}"
        )
    if args.output == "json":
        print_json(context.out, message_json(response))
    else:
        write_blocks(context.out, blocks)
    return 1 if failed else 0


# -- handlers ---------------------------------------------------------------------------------


async def _create(args: argparse.Namespace, context: CliContext) -> int:
    entries = await _requested_entries(args, update=False)
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.entry.batch_create_entry(
                entry_pb.BatchCreateEntryRequest(entries=entries)
            )
    return _report_batch(context, args, response, entries, "create")


async def _update(args: argparse.Namespace, context: CliContext) -> int:
    entries = await _requested_entries(args, update=True)
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.entry.batch_update_entry(
                entry_pb.BatchUpdateEntryRequest(entries=entries)
            )
    return _report_batch(context, args, response, entries, "update")


def entry_filter(args: argparse.Namespace) -> entry_pb.ListEntriesRequestFilter:
    """The ListEntries/CountEntries filter the show and count flags ask for."""
    message = entry_pb.ListEntriesRequestFilter()
    if args.spiffe_id:
        message.by_spiffe_id = _wire_id(parse_spiffe_id(args.spiffe_id, "-spiffeID"))
    if args.parent_id:
        message.by_parent_id = _wire_id(parse_spiffe_id(args.parent_id, "-parentID"))
    if args.selector:
        message.by_selectors = pb.SelectorMatch(
            selectors=[parse_selector(text) for text in args.selector],
            match=_MATCH[args.match_selectors_on],
        )
    if args.federates_with:
        message.by_federates_with = pb.FederatesWithMatch(
            trust_domains=[
                parse_trust_domain(name, "-federatesWith").name for name in args.federates_with
            ],
            match=_FEDERATES_MATCH[args.match_federates_with_on],
        )
    if args.hint:
        message.by_hint = args.hint
    return message


def _has_filters(args: argparse.Namespace) -> bool:
    return bool(
        args.spiffe_id or args.parent_id or args.selector or args.federates_with or args.hint
    )


async def _show(args: argparse.Namespace, context: CliContext) -> int:
    entries: list[pb.Entry] = []
    if args.entry_id:
        if _has_filters(args):
            raise AdminError("-entryID cannot be combined with other filters")
        async with connect(args.socket_path) as client:
            with client.errors():
                entries.append(
                    await client.entry.get_entry(entry_pb.GetEntryRequest(id=args.entry_id))
                )
    else:
        request_filter = entry_filter(args)
        async with connect(args.socket_path) as client:
            token = ""
            while True:
                with client.errors():
                    page = await client.entry.list_entries(
                        entry_pb.ListEntriesRequest(filter=request_filter, page_token=token)
                    )
                entries.extend(page.entries)
                token = page.next_page_token
                if not token:
                    break
    if args.output == "json":
        print_json(context.out, message_json(entry_pb.ListEntriesResponse(entries=entries)))
        return 0
    context.out(f"Found {plural(len(entries), 'entry', 'entries')}")
    if entries:
        context.out("")
        write_blocks(context.out, [describe_entry(entry) for entry in entries])
    return 0


async def _count(args: argparse.Namespace, context: CliContext) -> int:
    if args.entry_id:
        raise AdminError("-entryID is not a count filter: use 'entry show -entryID'")
    request_filter = entry_filter(args)
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.entry.count_entries(
                entry_pb.CountEntriesRequest(filter=request_filter)
            )
    if args.output == "json":
        print_json(context.out, message_json(response))
    else:
        context.out(plural(response.count, "registration entry", "registration entries"))
    return 0


async def _delete(args: argparse.Namespace, context: CliContext) -> int:
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.entry.batch_delete_entry(
                entry_pb.BatchDeleteEntryRequest(ids=[args.entry_id])
            )
    if args.output == "json":
        print_json(context.out, message_json(response))
    failed = [result for result in response.results if result.status.code != 0]
    for result in failed:
        context.err(f"{context.prog}: error: {result.status.message or status_line(result.status)}")
    if failed:
        return 1
    if args.output != "json":
        context.out(f"Deleted entry with ID: {args.entry_id}")
    return 0


_SIDES = frozenset({Side.SERVER})

ENTRY = Command(
    name="entry",
    summary="create, update, show, delete and count registration entries",
    sides=_SIDES,
    subcommands=(
        Command(
            name="create",
            summary="create registration entries",
            description=(
                "Create one entry from flags, or every entry of a -data JSON document. Each "
                "entry's result is reported; exits 1 when any entry failed."
            ),
            sides=_SIDES,
            handler=_create,
            add_flags=_add_entry_spec_flags,
        ),
        Command(
            name="update",
            summary="replace registration entries",
            description=(
                "Replace the entry named by -entryID with the one the flags describe (every "
                "field is set), or every entry of a -data JSON document (each with its id)."
            ),
            sides=_SIDES,
            handler=_update,
            add_flags=_add_entry_spec_flags,
        ),
        Command(
            name="show",
            summary="show registration entries",
            description="Show the entry with -entryID, or every entry matching the filters.",
            sides=_SIDES,
            handler=_show,
            add_flags=_add_filter_flags,
        ),
        Command(
            name="count",
            summary="count registration entries",
            description="Count the entries matching the filters (all entries without any).",
            sides=_SIDES,
            handler=_count,
            add_flags=_add_filter_flags,
        ),
        Command(
            name="delete",
            summary="delete a registration entry",
            sides=_SIDES,
            handler=_delete,
            add_flags=_add_delete_flags,
        ),
    ),
)

COMMANDS: tuple[Command, ...] = (ENTRY,)
