"""``plugins``: list the plugins installed for this side (type, name, distribution, version)."""

from __future__ import annotations

__all__ = ["COMMANDS", "render_table"]

import argparse
import asyncio
import json
from collections.abc import Sequence

from pyspire.catalog import PluginListing, Side, installed_plugins
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command

_COLUMNS = ("TYPE", "NAME", "DISTRIBUTION", "VERSION")


def render_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    """Left-aligned columns two spaces apart, the header first; no trailing spaces."""
    widths = [len(title) for title in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _add_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_flag(
        parser,
        "output",
        choices=("pretty", "json"),
        default="pretty",
        help="output format: pretty (a table) or json (default: pretty)",
    )


async def _plugins(args: argparse.Namespace, context: CliContext) -> int:
    discovery = await asyncio.to_thread(context.discover)
    listings: list[PluginListing] = installed_plugins(context.side, discovery)
    if args.output == "json":
        document = [
            {
                "type": item.type,
                "name": item.name,
                "distribution": item.distribution,
                "version": item.version,
                "description": item.description,
            }
            for item in listings
        ]
        context.out(json.dumps(document, indent=2))
        return 0
    if not listings:
        context.out(f"no plugins installed for the {context.side}")
        return 0
    rows = [(item.type, item.name, item.distribution, item.version) for item in listings]
    for line in render_table(rows, _COLUMNS):
        context.out(line)
    return 0


PLUGINS = Command(
    name="plugins",
    summary="list the installed plugins this side can use",
    description=(
        "List the plugins installed for this side, as discovered through the "
        "'pyspire.plugins' entry points: plugin type, name, distribution and version."
    ),
    sides=frozenset({Side.SERVER, Side.AGENT}),
    handler=_plugins,
    add_flags=_add_flags,
)

COMMANDS: tuple[Command, ...] = (PLUGINS,)
