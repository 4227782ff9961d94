"""The registry of CLI commands: what a command is and what it is given when it runs.

A :class:`Command` is a name, a one-line summary, the sides (server, agent) that offer it, a
function adding its flags, and either an async handler or subcommands (``entry create``,
``bundle show``). Each command group lives in one module under :mod:`pyspire.cli.commands`, which
exports its commands in ``COMMANDS``; :func:`pyspire.cli.commands.all_commands` collects them. A
new command therefore touches its own module and one line of that list, nothing else.
"""

from __future__ import annotations

__all__ = ["CliContext", "Command", "CommandHandler", "DiscoveryFactory"]

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from pyspire.catalog import Discovery, Side
from pyspire.cli.printable import printable_lines

CommandHandler = Callable[[argparse.Namespace, "CliContext"], Awaitable[int]]
"""Runs one command with its parsed flags; returns the process exit status."""

DiscoveryFactory = Callable[[], Discovery]
"""Finds the installed plugins (entry points by default; in-process modules in tests)."""


def _no_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    """A command without flags of its own."""


@dataclass(frozen=True)
class CliContext:
    """What a command may touch: its side, its output streams, the environment, the plugins.

    Commands write only to ``stdout`` (results) and ``stderr`` (problems), never to
    :data:`sys.stdout` directly, so they run the same in-process and from a shell.
    """

    side: Side
    prog: str
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    discover: DiscoveryFactory = Discovery.load

    def out(self, line: str = "") -> None:
        """Write one line of results; control characters in it are shown as escapes
        (:func:`~pyspire.cli.printable.printable_lines`)."""
        self.stdout.write(printable_lines(line) + "\n")

    def out_json(self, lines: str) -> None:
        """Write lines of JSON made by :func:`~pyspire.cli.json_stream.dumps_indented`, which
        are ASCII with every control character but their own newlines escaped: the escape
        pass of :meth:`out` has nothing to do on them (and costs a second over a hundred
        thousand entries)."""
        self.stdout.write(lines + "\n")

    def err(self, line: str) -> None:
        """Write one line about a problem, control characters escaped as in :meth:`out`."""
        self.stderr.write(printable_lines(line) + "\n")


@dataclass(frozen=True)
class Command:
    """One command (``validate``) or command group (``entry`` with ``create``, ``show``, ...).

    Exactly one of ``handler`` and ``subcommands`` is given. ``add_flags`` receives the side so
    a command shared by both processes can differ in defaults (the configuration path).
    """

    name: str
    summary: str
    sides: frozenset[Side]
    handler: CommandHandler | None = None
    add_flags: Callable[[argparse.ArgumentParser, Side], None] = _no_flags
    subcommands: tuple[Command, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if (self.handler is None) == (not self.subcommands):
            raise ValueError(
                f"command {self.name!r} must have either a handler or subcommands, not "
                f"{'both' if self.handler is not None else 'neither'}"
            )
        if not self.sides:
            raise ValueError(f"command {self.name!r} must be offered by at least one side")

    def offered_by(self, side: Side) -> bool:
        """Whether ``side``'s executable has this command."""
        return side in self.sides
