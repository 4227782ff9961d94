"""The CLI's commands, one module per command group, each exporting ``COMMANDS``."""

from __future__ import annotations

__all__ = ["all_commands"]

from pyspire.cli.commands import (
    agent,
    agent_health,
    api,
    bundle,
    datastore,
    entry,
    federation,
    healthcheck,
    localauthority,
    mint,
    plugins,
    run,
    token,
    validate,
)
from pyspire.cli.registry import Command

_GROUPS = (
    run,
    validate,
    plugins,
    entry,
    agent,
    bundle,
    federation,
    token,
    mint,
    healthcheck,
    datastore,
    localauthority,
    api,
    agent_health,
)


def all_commands() -> tuple[Command, ...]:
    """Every command of both executables, in the order ``--help`` lists them."""
    return tuple(command for group in _GROUPS for command in group.COMMANDS)
