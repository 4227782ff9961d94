"""Command-line flags spelled like SPIRE's, with a ``--kebab-case`` twin, and a quiet parser.

SPIRE's commands take single-dash camelCase flags (``-config``, ``-expandEnv``); Python users
expect ``--config`` and ``--expand-env``. :func:`add_flag` registers both spellings of one flag
so every command accepts either, and ``-flag=value`` as well as ``-flag value``.

:class:`CliArgumentParser` never writes to the process streams or exits on its own: help goes to
the streams it was given and usage errors become :class:`UsageError`, so a command line can be
run in-process (tests, embedding) exactly as from a shell.
"""

from __future__ import annotations

__all__ = [
    "CliArgumentParser",
    "ParserExit",
    "UsageError",
    "add_flag",
    "kebab_case",
]

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class UsageError(Exception):
    """The command line does not parse; the message says why, in one line."""

    def __init__(self, prog: str, message: str) -> None:
        self.prog = prog
        self.message = message
        super().__init__(f"{prog}: {message}")


class ParserExit(Exception):  # noqa: N818 - mirrors argparse's own exit, not an error
    """The parser finished on its own (``-h``, ``--version``) with this exit status."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(status)


def kebab_case(name: str) -> str:
    """``socketPath`` → ``socket-path``; ``spiffeID`` → ``spiffe-id``; ``config`` → ``config``."""
    return _WORD_BOUNDARY.sub("-", name).lower()


def add_flag(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    kebab: str | None = None,
    **kwargs: Any,
) -> argparse.Action:
    """Add the flag ``-<name>`` (SPIRE's camelCase spelling) and its twin ``--<kebab-name>``.

    ``name`` is written without dashes (``"expandEnv"``). The value lands in the namespace
    attribute named in snake case (``expand_env``) unless ``dest`` is given. Other keyword
    arguments are those of :meth:`argparse.ArgumentParser.add_argument`.
    """
    if not name or name.startswith("-"):
        raise ValueError(f"invalid flag name {name!r}: write it without dashes, like 'socketPath'")
    twin = kebab if kebab is not None else kebab_case(name)
    kwargs.setdefault("dest", twin.replace("-", "_"))
    spellings = [f"-{name}"]
    if f"--{twin}" != spellings[0]:
        spellings.append(f"--{twin}")
    return parser.add_argument(*spellings, **kwargs)


class CliArgumentParser(argparse.ArgumentParser):
    """An argument parser that writes to given streams and raises instead of exiting."""

    def __init__(
        self,
        *args: Any,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.stdout: TextIO = stdout if stdout is not None else sys.stdout
        self.stderr: TextIO = stderr if stderr is not None else sys.stderr

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if not message:
            return
        target: SupportsWrite[str]
        if file is None or file is sys.stdout:
            target = self.stdout
        elif file is sys.stderr:
            target = self.stderr
        else:
            target = file
        target.write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self.stderr.write(message)
        raise ParserExit(status)

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)
