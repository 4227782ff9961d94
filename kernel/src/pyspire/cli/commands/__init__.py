"""The CLI's commands, one module per command group, each exporting ``COMMANDS``."""

from __future__ import annotations

__all__ = ["all_commands"]

from pyspire.cli.commands import plugins, run, validate
from pyspire.cli.registry import Command

_GROUPS = (run, validate, plugins)


def all_commands() -> tuple[Command, ...]:
    """Every command of both executables, in the order ``--help`` lists them."""
    return tuple(command for group in _GROUPS for command in group.COMMANDS)
