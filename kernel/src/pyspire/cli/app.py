"""Building a side's argument parser from the command registry, and running a command line.

Exit statuses: 0 success, 1 the command failed for a reason it explains (an invalid
configuration, a broken plugin), 2 the command line itself is wrong, 130 interrupted. Expected
failures print one line per problem on standard error and never a traceback.
"""

from __future__ import annotations

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "build_parser", "main", "run_cli"]

import argparse
import asyncio
import importlib.metadata
import os
import sys
from collections.abc import Iterable, Sequence

from pyspire.catalog import PluginLoadError, Side
from pyspire.cli.commands import all_commands
from pyspire.cli.flags import CliArgumentParser, ParserExit, UsageError
from pyspire.cli.printable import printable
from pyspire.cli.registry import CliContext, Command
from pyspire.telemetry.logging import LogFormat, configure_logging
from pyspire_sdk.errors import ConfigError, PyspireError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_HANDLER = "_pyspire_handler"
_PARSER = "_pyspire_parser"

_DESCRIPTIONS = {
    Side.SERVER: "The pyspire server: the SPIFFE authority of a trust domain.",
    Side.AGENT: "The pyspire agent: serves the SPIFFE Workload API on a node.",
}


def _version() -> str:
    try:
        return importlib.metadata.version("pyspire")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _add_commands(
    parser: CliArgumentParser,
    commands: Iterable[Command],
    context: CliContext,
    title: str,
) -> None:
    offered = [command for command in commands if command.offered_by(context.side)]
    parser.set_defaults(**{_PARSER: parser, _HANDLER: None})
    if not offered:
        return
    subparsers = parser.add_subparsers(title=title, metavar="<command>")
    for command in offered:
        child = subparsers.add_parser(
            command.name,
            help=command.summary,
            description=command.description or command.summary,
            stdout=context.stdout,
            stderr=context.stderr,
        )
        assert isinstance(child, CliArgumentParser)
        command.add_flags(child, context.side)
        if command.handler is not None:
            child.set_defaults(**{_PARSER: child, _HANDLER: command.handler})
        else:
            _add_commands(child, command.subcommands, context, "subcommands")


def build_parser(
    context: CliContext, commands: Iterable[Command] | None = None
) -> CliArgumentParser:
    """The argument parser of ``context.side``'s executable with the commands it offers.

    ``-h``/``--help`` works at every level; unknown commands and flags raise
    :class:`~pyspire.cli.flags.UsageError`.
    """
    parser = CliArgumentParser(
        prog=context.prog,
        description=_DESCRIPTIONS[context.side],
        stdout=context.stdout,
        stderr=context.stderr,
    )
    parser.add_argument(
        "-version",
        "--version",
        action="version",
        version=f"{context.prog} {_version()}",
        help="print the version and exit",
    )
    _add_commands(parser, all_commands() if commands is None else commands, context, "commands")
    return parser


def run_cli(
    argv: Sequence[str],
    context: CliContext,
    commands: Iterable[Command] | None = None,
) -> int:
    """Parse ``argv`` (without the program name), run the chosen command, return the status."""
    parser = build_parser(context, commands)
    try:
        args, unknown = parser.parse_known_args(list(argv))
        if unknown:
            # argparse reports leftovers from the top-level parser; the command they were
            # given to is the one whose help lists the flags that exist.
            chosen_parser: argparse.ArgumentParser = getattr(args, _PARSER, parser)
            chosen_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except ParserExit as done:
        return done.status
    except UsageError as error:
        context.err(f"{error.prog}: error: {error.message} (see '{error.prog} -h')")
        return EXIT_USAGE
    handler = getattr(args, _HANDLER, None)
    if handler is None:
        chosen: argparse.ArgumentParser = getattr(args, _PARSER, parser)
        chosen.print_help(context.stderr)
        return EXIT_USAGE
    try:
        status: int = asyncio.run(handler(args, context))
    except KeyboardInterrupt:
        context.err(f"{context.prog}: interrupted")
        return EXIT_INTERRUPTED
    except ConfigError as error:
        for issue in error.issues:
            context.err(printable(str(issue)))
        return EXIT_FAILURE
    except PluginLoadError as error:
        for problem in error.problems:
            context.err(f"{context.prog}: error: {problem}")
        return EXIT_FAILURE
    except PyspireError as error:
        context.err(f"{context.prog}: error: {error}")
        return EXIT_FAILURE
    return status


EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE, what a shell reports for a writer whose reader went away."""


def main(side: Side, prog: str, argv: Sequence[str] | None = None) -> int:
    """The console-script entry point of ``side``: process streams, process arguments.

    Logging goes to standard error at WARN level before any command runs, so library and
    discovery messages never mix with a command's results on standard output.
    """
    configure_logging("WARN", LogFormat.TEXT, stream=sys.stderr)
    arguments = sys.argv[1:] if argv is None else argv
    try:
        return run_cli(arguments, CliContext(side=side, prog=prog))
    except BrokenPipeError:
        # The reader went away (``... | head``): stop quietly, as Unix tools do. Point stdout at
        # /dev/null so the interpreter's final flush does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
