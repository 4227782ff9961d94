"""``datastore copy``: copy every record from one server's datastore to another's.

The way from SQLite to PostgreSQL (or back): stop the server, run
``pyspire-server datastore copy -from old.toml -to new.toml``, start the server on the new
configuration. Each file is a server configuration; its one ``[server.plugins.datastore.*]``
table (and ``trust_domain``, ``data_dir``) says which datastore to open.

Records go in dependency order: bundles (entries federating with a trust domain need its
bundle), federation relationships, the CA journals (the ``-from`` server's own, named by the ID
in its ``data_dir``, and one written before journals were kept per server), join tokens,
attested nodes, node selectors, then entries in batches, each batch one transaction. Every step
first reads what the destination already holds and writes only what is missing or different, so
a copy that was interrupted continues where it stopped when run again. At the end both sides are
read again and compared, kind by kind, by count and by a SHA-256 of their records; the command
fails unless all are equal. Both datastores must offer
:class:`~pyspire_sdk.plugins.datastore.CopyableDataStore` (every join token, entries written
exactly as they are, ids, creation times and revisions included).
"""

from __future__ import annotations

__all__ = ["COMMANDS", "copy_datastore"]

import argparse
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from pyspire.ca.manager import JOURNAL_NAME, journal_name
from pyspire.catalog import DATASTORE, Catalog, CatalogPlan, Discovery, PlannedPlugin, Side
from pyspire.catalog.host import host_services_for
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command
from pyspire.config import load_server_config
from pyspire.server.instance import read_server_id
from pyspire.telemetry.metrics import PrometheusMetrics
from pyspire_sdk.clock import SystemClock
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, PyspireError
from pyspire_sdk.plugins.datastore import CopyableDataStore, DataStore, NodeFilter, Page

ENTRY_BATCH = 500
"""Entries written per transaction (and per progress line)."""


class CopyError(PyspireError):
    """The copy cannot start or did not end with equal datastores."""


@dataclass(frozen=True)
class Tally:
    """One kind of record on both sides after the copy."""

    kind: str
    count: int
    digest: str
    copied: int


def _digest(lines: Iterable[str]) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for line in sorted(lines):
        digest.update(line.encode())
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


async def _all_bundles(datastore: DataStore) -> list[Any]:
    return list((await datastore.list_bundles(Page())).bundles)


async def _all_relationships(datastore: DataStore) -> list[Any]:
    return list((await datastore.list_federation_relationships(Page())).relationships)


async def _all_nodes(datastore: DataStore) -> list[Any]:
    return list((await datastore.list_attested_nodes(NodeFilter(), Page())).nodes)


async def _records(
    datastore: CopyableDataStore | DataStore, journals: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Every record of ``datastore`` by kind, keyed and written out canonically."""
    assert isinstance(datastore, CopyableDataStore)
    assert isinstance(datastore, DataStore)
    found = {name: await datastore.get_ca_journal(name) for name in journals}
    return {
        "bundles": {b.trust_domain.name: repr(b) for b in await _all_bundles(datastore)},
        "federation relationships": {
            r.trust_domain.name: repr(r) for r in await _all_relationships(datastore)
        },
        "CA journal": {name: data.hex() for name, data in found.items() if data is not None},
        "join tokens": {
            t.token: f"{t.token} {t.expires_at.isoformat()}"
            for t in await datastore.list_join_tokens()
        },
        "attested nodes": {str(n.spiffe_id): repr(n) for n in await _all_nodes(datastore)},
        "node selectors": {
            str(spiffe_id): repr(selectors)
            for spiffe_id, selectors in (await datastore.list_all_node_selectors()).items()
        },
        "entries": {e.id: repr(e) for e in await datastore.list_all_entries()},
    }


async def copy_datastore(
    source: DataStore,
    destination: DataStore,
    report: Callable[[str], None],
    *,
    journals: Sequence[str] = (JOURNAL_NAME,),
) -> list[Tally]:
    """Copy what ``destination`` lacks or holds differently from ``source`` (of the CA
    journals, those named in ``journals``), then compare the two; returns the comparison, or
    raises :class:`CopyError` naming what differs."""
    for side, datastore in (("-from", source), ("-to", destination)):
        if not isinstance(datastore, CopyableDataStore):
            raise CopyError(
                f"{side}: datastore {type(datastore).__name__} cannot be copied: it does not "
                "offer CopyableDataStore (listing join tokens, restoring entries exactly)"
            )
    assert isinstance(source, CopyableDataStore)
    assert isinstance(destination, CopyableDataStore)
    copied: dict[str, int] = {}
    for kind, step in _STEPS:
        if step is _copy_journals:
            step = partial(_copy_journals, journals=journals)
        count, present = await step(source, destination, report)
        copied[kind] = count
        report(f"{kind}: copied {count}, already present {present}")
    return await _compare(source, destination, copied, journals)


class _Copyable(DataStore, CopyableDataStore, Protocol):
    """A datastore that can be copied (what :func:`copy_datastore` checks both sides are)."""


_Step = Callable[[_Copyable, _Copyable, Callable[[str], None]], Awaitable[tuple[int, int]]]


async def _copy_bundles(
    source: _Copyable, destination: _Copyable, _report: Callable[[str], None]
) -> tuple[int, int]:
    have = {b.trust_domain: b for b in await _all_bundles(destination)}
    wanted = [b for b in await _all_bundles(source) if have.get(b.trust_domain) != b]
    for bundle in wanted:
        await destination.set_bundle(bundle)
    return len(wanted), len(have)


async def _copy_relationships(
    source: _Copyable, destination: _Copyable, _report: Callable[[str], None]
) -> tuple[int, int]:
    have = {r.trust_domain: r for r in await _all_relationships(destination)}
    count = 0
    for relationship in await _all_relationships(source):
        present = have.get(relationship.trust_domain)
        if present == relationship:
            continue
        if present is None:
            await destination.create_federation_relationship(relationship)
        else:
            await destination.update_federation_relationship(relationship)
        count += 1
    return count, len(have)


async def _copy_journals(
    source: _Copyable,
    destination: _Copyable,
    _report: Callable[[str], None],
    journals: Sequence[str] = (JOURNAL_NAME,),
) -> tuple[int, int]:
    copied = present_count = 0
    for name in journals:
        journal = await source.get_ca_journal(name)
        present = await destination.get_ca_journal(name)
        present_count += present is not None
        if journal is not None and journal != present:
            await destination.set_ca_journal(name, journal)
            copied += 1
    return copied, present_count


async def _copy_join_tokens(
    source: _Copyable, destination: _Copyable, _report: Callable[[str], None]
) -> tuple[int, int]:
    have = {t.token: t for t in await destination.list_join_tokens()}
    count = 0
    for token in await source.list_join_tokens():
        present = have.get(token.token)
        if present == token:
            continue
        if present is not None:
            await destination.delete_join_token(token.token)
        await destination.create_join_token(token)
        count += 1
    return count, len(have)


async def _copy_nodes(
    source: _Copyable, destination: _Copyable, _report: Callable[[str], None]
) -> tuple[int, int]:
    have = {n.spiffe_id: n for n in await _all_nodes(destination)}
    count = 0
    for node in await _all_nodes(source):
        present = have.get(node.spiffe_id)
        if present == node:
            continue
        if present is None:
            await destination.create_attested_node(node)
        else:
            await destination.update_attested_node(node)
        count += 1
    return count, len(have)


async def _copy_node_selectors(
    source: _Copyable, destination: _Copyable, _report: Callable[[str], None]
) -> tuple[int, int]:
    have = await destination.list_all_node_selectors()
    count = 0
    for spiffe_id, selectors in (await source.list_all_node_selectors()).items():
        if have.get(spiffe_id) != selectors:
            await destination.set_node_selectors(spiffe_id, selectors)
            count += 1
    return count, len(have)


async def _copy_entries(
    source: _Copyable, destination: _Copyable, report: Callable[[str], None]
) -> tuple[int, int]:
    have = {e.id: e for e in await destination.list_all_entries()}
    missing = [e for e in await source.list_all_entries() if have.get(e.id) != e]
    for start in range(0, len(missing), ENTRY_BATCH):
        batch = missing[start : start + ENTRY_BATCH]
        await destination.restore_entries(batch)
        report(f"entries: copied {start + len(batch)} of {len(missing)}")
    return len(missing), len(have)


_STEPS: tuple[tuple[str, _Step], ...] = (
    ("bundles", _copy_bundles),
    ("federation relationships", _copy_relationships),
    ("CA journal", _copy_journals),
    ("join tokens", _copy_join_tokens),
    ("attested nodes", _copy_nodes),
    ("node selectors", _copy_node_selectors),
    ("entries", _copy_entries),
)
"""Each kind of record with the step that copies it, in dependency order."""


async def _compare(
    source: _Copyable, destination: _Copyable, copied: Mapping[str, int], journals: Sequence[str]
) -> list[Tally]:
    """Both sides kind by kind, by count and digest; CopyError naming every difference."""
    source_records = await _records(source, journals)
    destination_records = await _records(destination, journals)
    tallies: list[Tally] = []
    problems: list[str] = []
    for kind, records in source_records.items():
        theirs = destination_records[kind]
        count, digest = _digest(records.values())
        other_count, other_digest = _digest(theirs.values())
        if (count, digest) != (other_count, other_digest):
            extra = sorted(set(theirs) - set(records))
            differing = sorted(key for key in records if theirs.get(key) != records[key])
            problems.append(
                f"{kind}: source has {count} ({digest[:12]}), destination {other_count} "
                f"({other_digest[:12]})"
                + (f"; only in the destination: {', '.join(extra[:3])}" if extra else "")
                + (f"; missing or different: {', '.join(differing[:3])}" if differing else "")
            )
        tallies.append(Tally(kind, count, digest, copied.get(kind, 0)))
    if problems:
        raise CopyError("the datastores differ after the copy: " + "; ".join(problems))
    return tallies


def _planned_datastore(
    path: Path, flag: str, expand_env: bool, environ: Mapping[str, str], discovery: Discovery
) -> tuple[PlannedPlugin, Any]:
    """The datastore a server configuration file names, planned, with the file's settings."""
    try:
        loaded = load_server_config(path, expand_env=expand_env, environ=environ)
    except ConfigError as error:
        raise CopyError(f"{flag} {path}: {error}") from None
    table = loaded.plugins.get(DATASTORE.toml_name)
    key = f"server.plugins.{DATASTORE.toml_name}"
    if not isinstance(table, Mapping) or len(table) != 1:
        found = 0 if not isinstance(table, Mapping) else len(table)
        raise CopyError(f"{flag} {path}: {key} must name exactly one datastore, found {found}")
    ((name, settings),) = table.items()
    discovered = discovery.get(DATASTORE, name)
    if discovered is None:
        raise CopyError(f"{flag} {path}: {key}.{name}: no datastore plugin {name!r} is installed")
    try:
        config = load_config(discovered.registration.config_type, settings, path=f"{key}.{name}")
    except ConfigError as error:
        issues = "; ".join(str(issue) for issue in error.issues)
        raise CopyError(f"{flag} {path}: {issues}") from None
    planned = PlannedPlugin(
        kind=DATASTORE, name=name, config=config, discovered=discovered, path=f"{key}.{name}"
    )
    return planned, loaded.settings


def _journals(path: Path, expand_env: bool, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The CA journals to copy: one from before journals were kept per server, and the
    journal of the server whose ID is in the ``-from`` configuration's ``data_dir``."""
    settings = load_server_config(path, expand_env=expand_env, environ=environ).settings
    server_id = read_server_id(settings.data_dir)
    return (JOURNAL_NAME,) if server_id is None else (JOURNAL_NAME, journal_name(server_id))


@asynccontextmanager
async def _opened(
    path: Path, flag: str, args: argparse.Namespace, context: CliContext
) -> AsyncIterator[DataStore]:
    planned, settings = _planned_datastore(
        path, flag, args.expand_env, context.environ, context.discover()
    )
    metrics = PrometheusMetrics("pyspire_server")

    def host_for(plugin: PlannedPlugin) -> Any:
        return host_services_for(
            plugin,
            trust_domain=settings.trust_domain,
            clock=SystemClock(),
            metrics=metrics,
            data_dir=settings.data_dir,
        )

    opened = False
    try:
        async with Catalog.open(
            CatalogPlan(side=Side.SERVER, plugins=(planned,)), host_for=host_for
        ) as catalog:
            opened = True
            yield catalog.one(DATASTORE)
    except PyspireError as error:
        if opened:
            raise
        raise CopyError(f"{flag} {path}: {error}") from None


def _add_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_flag(
        parser,
        "from",
        dest="source",
        metavar="FILE",
        type=Path,
        required=True,
        help="server configuration whose datastore is copied",
    )
    add_flag(
        parser,
        "to",
        dest="destination",
        metavar="FILE",
        type=Path,
        required=True,
        help="server configuration whose datastore receives the copy",
    )
    add_flag(
        parser,
        "expandEnv",
        action="store_true",
        help="expand $VAR and ${VAR} in both files from the environment before parsing",
    )


async def _copy(args: argparse.Namespace, context: CliContext) -> int:
    def report(line: str) -> None:
        context.out(line)
        context.stdout.flush()

    try:
        async with (
            _opened(args.source, "-from", args, context) as source,
            _opened(args.destination, "-to", args, context) as destination,
        ):
            journals = _journals(args.source, args.expand_env, context.environ)
            tallies = await copy_datastore(source, destination, report, journals=journals)
    except PyspireError as error:
        context.err(f"datastore copy failed: {error}")
        return 1
    for tally in tallies:
        context.out(
            f"verified {tally.kind}: {tally.count} (copied now {tally.copied}, "
            f"sha256 {tally.digest[:16]})"
        )
    context.out("datastore copy complete: both datastores hold the same records")
    return 0


DATASTORE_COMMAND = Command(
    name="datastore",
    summary="work on the datastore itself",
    sides=frozenset({Side.SERVER}),
    subcommands=(
        Command(
            name="copy",
            summary="copy every record from one datastore to another (resumable, verified)",
            description=(
                "Copy bundles, federation relationships, the CA journal, join tokens, attested "
                "nodes with their selectors and entries from the datastore of the -from "
                "configuration to that of the -to configuration, writing only what the "
                "destination lacks (run it again to continue an interrupted copy), then "
                "compare both sides by counts and SHA-256 digests. Stop the servers first."
            ),
            sides=frozenset({Side.SERVER}),
            handler=_copy,
            add_flags=_add_flags,
        ),
    ),
)

COMMANDS: tuple[Command, ...] = (DATASTORE_COMMAND,)
