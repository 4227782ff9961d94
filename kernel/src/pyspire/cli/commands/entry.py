"""``entry create|update|show|delete|count``: registration entries through the Entry API.

Flags are SPIRE's (``-spiffeID``, ``-parentID``, ``-selector`` ...). ``create`` and ``update``
take one entry from flags or many from ``-data`` (a JSON document ``{"entries": [...]}`` in the
published ``spire.api.types.Entry`` JSON shape, ``-`` for standard input). However many there
are, they go to the server in calls that fit its message limits (:mod:`pyspire.cli.batches`),
the next call under way while the last one's results are printed. Every entry is reported as
its call answers: successes on standard output, each failure as one line on standard error
naming the entry by its place in the document, and the command exits 1 when any entry failed.
A long run shows a progress bar on standard error when that is a terminal.

``show`` and ``count`` take SPIRE's filters. ``show`` counts first (its text output starts with
``Found N entries``), then pages through ListEntries, printing each page while the server reads
the next, so a hundred thousand entries never sit in memory at once.

``-output json`` prints the API response: the Batch*EntryResponse of ``create``/``update``/
``delete``, the CountEntriesResponse of ``count``, and for ``show`` always a
ListEntriesResponse (``{"entries": [...]}``, all pages), with ``-entryID`` too, so scripts
read one shape. Long lists are written element by element as they arrive, exactly as the whole
document would be.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "SHOW_PAGE_SIZE", "entry_filter"]

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pyspire.catalog import Side
from pyspire.cli.admin_client import (
    AdminClient,
    AdminError,
    add_admin_flags,
    connect,
    describe_entry,
    parse_selector,
    parse_spiffe_id,
    parse_trust_domain,
    parse_ttl,
    plural,
    print_json,
    status_line,
    write_blocks,
)
from pyspire.cli.batches import batched, send_pipelined
from pyspire.cli.entry_json import INT64_MAX, EntryDraft, entries_from_document
from pyspire.cli.flags import add_flag
from pyspire.cli.json_stream import JsonListWriter
from pyspire.cli.printable import printable
from pyspire.cli.progress import Progress
from pyspire.cli.registry import CliContext, Command
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as wire
from pyspire.proto.gen.codec import spire_api_types as types_wire
from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.messages import EncodedMessage
from pyspire.tasks import GeneratorTasks
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.spiffeid import server_id

SHOW_PAGE_SIZE = 500
"""Entries per ListEntries page (SPIRE's page size): each page is printed while the server
reads the next."""
_SelectorMatch = pb.SelectorMatchMatchBehavior
_FederatesMatch = pb.FederatesWithMatchMatchBehavior
_MATCH = {
    "exact": int(_SelectorMatch.MATCH_EXACT),
    "subset": int(_SelectorMatch.MATCH_SUBSET),
    "superset": int(_SelectorMatch.MATCH_SUPERSET),
    "any": int(_SelectorMatch.MATCH_ANY),
}
_FEDERATES_MATCH = {
    "exact": int(_FederatesMatch.MATCH_EXACT),
    "subset": int(_FederatesMatch.MATCH_SUBSET),
    "superset": int(_FederatesMatch.MATCH_SUPERSET),
    "any": int(_FederatesMatch.MATCH_ANY),
}
_SERVICE = "/spire.api.server.entry.v1.Entry/"

# -- flags ------------------------------------------------------------------------------------


def _add_entry_spec_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_admin_flags(parser)
    _add_entry_identity_flags(parser)
    _add_entry_issuance_flags(parser)
    add_flag(
        parser,
        "data",
        metavar="FILE",
        help='a JSON file of entries ({"entries": [...]}); "-" reads standard input',
    )


def _add_entry_identity_flags(parser: argparse.ArgumentParser) -> None:
    """Who the entry is for and what identity it grants."""
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


def _add_entry_issuance_flags(parser: argparse.ArgumentParser) -> None:
    """How the entry's SVIDs are issued, and how long the entry lives."""
    add_flag(
        parser,
        "x509SVIDTTL",
        kebab="x509-svid-ttl",
        metavar="DURATION",
        help="X509-SVID lifetime, e.g. 1h or 3600 (default: the server's)",
    )
    add_flag(
        parser,
        "jwtSVIDTTL",
        kebab="jwt-svid-ttl",
        metavar="DURATION",
        help="JWT-SVID lifetime, e.g. 5m or 300 (default: the server's)",
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


def _entry_from_flags(args: argparse.Namespace, *, update: bool) -> EntryDraft:
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
    x509_svid_ttl = parse_ttl(args.x509_svid_ttl, "-x509SVIDTTL")
    jwt_svid_ttl = parse_ttl(args.jwt_svid_ttl, "-jwtSVIDTTL")
    if args.entry_expiry < 0 or args.entry_expiry > INT64_MAX:
        raise AdminError(
            f"invalid -entryExpiry: {args.entry_expiry} is out of range (0 to {INT64_MAX})"
        )
    federates_with = [
        parse_trust_domain(name, "-federatesWith").name for name in args.federates_with
    ]
    return EntryDraft(
        {
            "id": args.entry_id or "",
            "spiffe_id": spiffe_id,
            "parent_id": parent_id,
            "selectors": [parse_selector(text) for text in args.selector],
            "x509_svid_ttl": x509_svid_ttl,
            "jwt_svid_ttl": jwt_svid_ttl,
            "federates_with": federates_with,
            "admin": args.admin,
            "downstream": args.downstream,
            "expires_at": args.entry_expiry,
            "dns_names": list(args.dns),
            "store_svid": args.store_svid,
            "hint": args.hint,
        }
    )


def _read_data(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AdminError(f"invalid -data: file {source!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AdminError(f"invalid -data: cannot read {source!r}: {error}") from None


def _parse_data(text: str) -> list[EntryDraft]:
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


async def _load_data(source: str) -> list[EntryDraft]:
    text = await asyncio.to_thread(_read_data, source)
    return await asyncio.to_thread(_parse_data, text)


async def _requested_entries(
    args: argparse.Namespace, *, update: bool
) -> tuple[int, Iterator[EntryDraft]]:
    """How many entries are asked for, and the entries: every one checked before any is sent;
    each encoded only as its batch is sent."""
    if args.data is not None:
        if _uses_entry_flags(args):
            raise AdminError("-data cannot be combined with flags describing an entry")
        drafts = await _load_data(args.data)
        if update:
            for index, draft in enumerate(drafts):
                if not draft.id:
                    raise AdminError(f"invalid -data: entries[{index}].id is required to update")
        return len(drafts), iter(drafts)
    return 1, iter([_entry_from_flags(args, update=update)])


# -- batch results ----------------------------------------------------------------------------

_BatchResult = wire.BatchCreateEntryResponse_Result | wire.BatchUpdateEntryResponse_Result
_BatchResponse = wire.BatchCreateEntryResponse | wire.BatchUpdateEntryResponse
_Encoded = tuple[EntryDraft, bytes]
"""An entry to send, and its encoding."""


class _BatchReport:
    """Prints the results of a create or update as each call answers: the entries on standard
    output (text blocks, or the elements of one JSON ``results`` list), every failure as one
    line on standard error naming the entry by its place in the request."""

    def __init__(
        self, context: CliContext, args: argparse.Namespace, total: int, verb: str
    ) -> None:
        self._context = context
        self._verb = verb
        self.total = total
        self.done = 0
        self.failed = 0
        self._blocks_written = False
        self.json = JsonListWriter(context.out_json, "results") if args.output == "json" else None
        self.progress = Progress(context.stderr, total, "entries", verb=f"{verb[:-1]}ing")

    def handle(self, batch: Sequence[_Encoded], response: _BatchResponse) -> None:
        results: Sequence[_BatchResult] = response.results
        if len(results) != len(batch):
            raise AdminError(
                f"the server answered {len(results)} results for a batch of {len(batch)} entries"
            )
        for offset, ((requested, _), result) in enumerate(zip(batch, results, strict=True)):
            if self.json is not None:
                self.json.add(_result_json(result))
            status = result.status or types_wire.Status()
            if status.code == 0:
                if self.json is None:
                    if self._blocks_written:
                        self._context.out("")
                    write_blocks(self._context.out, [describe_entry(_entry_of(result))])
                    self._blocks_written = True
                continue
            self.failed += 1
            number = self.done + offset + 1
            name = requested.name or f"#{number}"
            self.progress.clear()
            self._context.err(
                f"{self._context.prog}: error: failed to {self._verb} entry {number} "
                f"({printable(name)}): {status_line(status)}"
            )
        self.done += len(batch)
        self.progress.advance(len(batch))

    def finish(self) -> int:
        """End the output; the exit status: 1 when any entry failed."""
        self.progress.clear()
        if self.json is not None:
            self.json.close()
        if self.failed and self.total > 1:
            self._context.err(
                f"{self._context.prog}: {self.failed:,} of {self.total:,} entries failed to "
                f"{self._verb}"
            )
        return 1 if self.failed else 0


async def _send_entries(
    args: argparse.Namespace,
    context: CliContext,
    requested: tuple[int, Iterator[EntryDraft]],
    verb: str,
    call: Callable[[AdminClient, Sequence[_Encoded]], Awaitable[_BatchResponse]],
) -> int:
    """Send the ``requested`` entries in batches that fit the server's limits
    (:mod:`pyspire.cli.batches`) and report every result as it arrives."""
    total, entries = requested
    report = _BatchReport(context, args, total, verb)
    try:
        async with connect(args.socket_path) as client:
            with client.errors():
                await send_pipelined(
                    batched(((draft, draft.encoded()) for draft in entries), _encoded_size),
                    lambda batch: call(client, batch),
                    report.handle,
                )
    except AdminError as error:
        report.finish()
        if report.done:
            raise AdminError(
                f"{error} (stopped after {report.done:,} of {report.total:,} entries; those "
                "were reported above)"
            ) from None
        raise
    return report.finish()


def _encoded_size(item: _Encoded) -> int:
    return len(item[1])


def _result_json(result: _BatchResult) -> Any:
    if isinstance(result, wire.BatchCreateEntryResponse_Result):
        return wire.json_BatchCreateEntryResponse_Result(result)
    return wire.json_BatchUpdateEntryResponse_Result(result)


def _entry_of(result: _BatchResult) -> types_wire.Entry:
    return result.entry if result.entry is not None else types_wire.Entry()


# -- handlers ---------------------------------------------------------------------------------


async def _create(args: argparse.Namespace, context: CliContext) -> int:
    return await _send_entries(
        args,
        context,
        await _requested_entries(args, update=False),
        "create",
        lambda client, batch: client.call(
            _SERVICE + "BatchCreateEntry",
            EncodedMessage(wire.write_BatchCreateEntryRequest(entries=[data for _, data in batch])),
            wire.decode_BatchCreateEntryResponse,
        ),
    )


async def _update(args: argparse.Namespace, context: CliContext) -> int:
    return await _send_entries(
        args,
        context,
        await _requested_entries(args, update=True),
        "update",
        lambda client, batch: client.call(
            _SERVICE + "BatchUpdateEntry",
            EncodedMessage(wire.write_BatchUpdateEntryRequest(entries=[data for _, data in batch])),
            wire.decode_BatchUpdateEntryResponse,
        ),
    )


def _wire_id(text: str, flag: str) -> types_wire.SPIFFEID:
    spiffe_id = parse_spiffe_id(text, flag)
    return types_wire.SPIFFEID(trust_domain=spiffe_id.trust_domain.name, path=spiffe_id.path)


def entry_filter(args: argparse.Namespace) -> wire.ListEntriesRequest_Filter:
    """The ListEntries/CountEntries filter the show and count flags ask for."""
    message = wire.ListEntriesRequest_Filter()
    if args.spiffe_id:
        message.by_spiffe_id = _wire_id(args.spiffe_id, "-spiffeID")
    if args.parent_id:
        message.by_parent_id = _wire_id(args.parent_id, "-parentID")
    if args.selector:
        message.by_selectors = types_wire.SelectorMatch(
            selectors=[
                types_wire.Selector(type=selector.type, value=selector.value)
                for selector in map(parse_selector, args.selector)
            ],
            match=_MATCH[args.match_selectors_on],
        )
    if args.federates_with:
        message.by_federates_with = types_wire.FederatesWithMatch(
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


class _EntryPrinter:
    """Prints listed entries as they arrive: text blocks after a ``Found N entries`` line, or
    the elements of one ListEntriesResponse JSON document."""

    def __init__(self, context: CliContext, args: argparse.Namespace, total: int) -> None:
        self._context = context
        self.printed = 0
        self.json: JsonListWriter | None = None
        if args.output == "json":
            self.json = JsonListWriter(context.out_json, "entries", {"next_page_token": ""})
        else:
            context.out(f"Found {plural(total, 'entry', 'entries')}")

    def add(self, entries: Sequence[types_wire.Entry]) -> None:
        if self.json is not None:
            self.json.extend(map(types_wire.json_Entry, entries))
        else:
            # One write per entry: a blank line, then its block (each line already escaped).
            for entry in entries:
                self._context.out("\n" + "\n".join(describe_entry(entry)))
        self.printed += len(entries)

    def close(self) -> None:
        if self.json is not None:
            self.json.close()


async def _pages(
    client: AdminClient, request_filter: wire.ListEntriesRequest_Filter
) -> AsyncIterator[wire.ListEntriesResponse]:
    """Every page of ListEntries; the next page is asked for before the current one is
    handed over, so the server works on it while this one is printed."""

    async with GeneratorTasks() as tasks:

        def ask(token: str) -> asyncio.Task[wire.ListEntriesResponse]:
            request = wire.ListEntriesRequest(
                filter=request_filter, page_size=SHOW_PAGE_SIZE, page_token=token
            )
            return tasks.start(
                client.call(_SERVICE + "ListEntries", request, wire.decode_ListEntriesResponse)
            )

        upcoming: asyncio.Task[wire.ListEntriesResponse] | None = ask("")
        while upcoming is not None:
            with client.errors():
                page = await upcoming
            upcoming = ask(page.next_page_token) if page.next_page_token else None
            # Let the request go out before this page is printed: printing does not give the
            # event loop a turn, and the server would otherwise wait for the next ask.
            await asyncio.sleep(0)
            yield page


async def _count_entries(
    client: AdminClient, request_filter: wire.ListEntriesRequest_Filter
) -> wire.CountEntriesResponse:
    return await client.call(
        _SERVICE + "CountEntries",
        wire.CountEntriesRequest(filter=request_filter),
        wire.decode_CountEntriesResponse,
    )


async def _show(args: argparse.Namespace, context: CliContext) -> int:
    if args.entry_id:
        if _has_filters(args):
            raise AdminError("-entryID cannot be combined with other filters")
        async with connect(args.socket_path) as client:
            with client.errors():
                entry = await client.call(
                    _SERVICE + "GetEntry",
                    wire.GetEntryRequest(id=args.entry_id),
                    types_wire.decode_Entry,
                )
        printer = _EntryPrinter(context, args, 1)
        printer.add([entry])
        printer.close()
        return 0
    request_filter = entry_filter(args)
    async with connect(args.socket_path) as client:
        # The count comes first: the text output starts with it, and the progress bar needs it.
        with client.errors():
            counted = await _count_entries(client, request_filter)
        printer = _EntryPrinter(context, args, counted.count)
        with Progress(context.stderr, counted.count, "entries", verb="listing") as progress:
            try:
                async for page in _pages(client, request_filter):
                    printer.add(page.entries)
                    progress.advance(len(page.entries))
            finally:
                printer.close()
    if printer.printed != counted.count:
        context.err(
            f"{context.prog}: warning: {printer.printed:,} entries listed, {counted.count:,} "
            "counted first: entries changed meanwhile"
        )
    return 0


async def _count(args: argparse.Namespace, context: CliContext) -> int:
    if args.entry_id:
        raise AdminError("-entryID is not a count filter: use 'entry show -entryID'")
    request_filter = entry_filter(args)
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await _count_entries(client, request_filter)
    if args.output == "json":
        print_json(context.out, wire.json_CountEntriesResponse(response))
    else:
        context.out(plural(response.count, "registration entry", "registration entries"))
    return 0


async def _delete(args: argparse.Namespace, context: CliContext) -> int:
    async with connect(args.socket_path) as client:
        with client.errors():
            response = await client.call(
                _SERVICE + "BatchDeleteEntry",
                wire.BatchDeleteEntryRequest(ids=[args.entry_id]),
                wire.decode_BatchDeleteEntryResponse,
            )
    if args.output == "json":
        print_json(context.out, wire.json_BatchDeleteEntryResponse(response))
    statuses = [result.status or types_wire.Status() for result in response.results]
    failed = [status for status in statuses if status.code != 0]
    for status in failed:
        context.err(f"{context.prog}: error: {status.message or status_line(status)}")
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
