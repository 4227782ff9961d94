"""``validate``: check a configuration file without starting anything.

The process settings and the plugins table are checked against the installed plugins, and every
problem is printed on its own line with its key path, so one run shows everything to fix.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "ValidationReport", "validate_configuration"]

import argparse
import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspire.catalog import Discovery, Side, plan_plugins
from pyspire.cli.flags import add_flag
from pyspire.cli.printable import printable
from pyspire.cli.registry import CliContext, Command, DiscoveryFactory
from pyspire.config import (
    AGENT_SCHEMA,
    SERVER_SCHEMA,
    ConfigSchema,
    load_document,
    plugins_table,
    read_document,
)
from pyspire_sdk.errors import ConfigError, ConfigIssue

VALID_MESSAGE = "configuration is valid"


def schema_for(side: Side) -> ConfigSchema[Any]:
    """The configuration file layout of ``side``."""
    return SERVER_SCHEMA if side is Side.SERVER else AGENT_SCHEMA


@dataclass(frozen=True)
class ValidationReport:
    """Everything found in one configuration file: errors, then advice."""

    issues: tuple[ConfigIssue, ...]
    warnings: tuple[ConfigIssue, ...]

    @property
    def valid(self) -> bool:
        """True when nothing stops the process from starting with this file."""
        return not self.issues


def validate_configuration(
    side: Side,
    path: Path,
    *,
    expand_env: bool,
    environ: Mapping[str, str],
    discover: DiscoveryFactory,
) -> ValidationReport:
    """Check the file at ``path`` for ``side``: settings first, then plugins, all issues kept.

    An unreadable file or a TOML syntax error is reported alone, since nothing else can be
    checked. Discovery problems (a broken plugin installed) raise
    :class:`~pyspire.catalog.PluginLoadError`. Runs blocking file and import work; call it in a
    thread from async code.
    """
    schema = schema_for(side)
    try:
        document = read_document(path, expand_env=expand_env, environ=environ)
    except ConfigError as error:
        return ValidationReport(issues=error.issues, warnings=())
    issues: list[ConfigIssue] = []
    warnings: tuple[ConfigIssue, ...] = ()
    try:
        loaded = load_document(schema, document, source=path)
    except ConfigError as error:
        issues.extend(error.issues)
    else:
        warnings = loaded.warnings
    discovery: Discovery = discover()
    try:
        plan_plugins(side, plugins_table(schema, document), discovery, path=schema.plugins_path)
    except ConfigError as error:
        issues.extend(error.issues)
    return ValidationReport(issues=tuple(issues), warnings=warnings)


def _add_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    default = schema_for(side).default_path
    add_flag(
        parser,
        "config",
        metavar="FILE",
        type=Path,
        default=default,
        help=f"path to the configuration file (default: {default})",
    )
    add_flag(
        parser,
        "expandEnv",
        action="store_true",
        help="expand $VAR and ${VAR} in the file from the environment before parsing",
    )


async def _validate(args: argparse.Namespace, context: CliContext) -> int:
    report = await asyncio.to_thread(
        validate_configuration,
        context.side,
        args.config,
        expand_env=args.expand_env,
        environ=context.environ,
        discover=context.discover,
    )
    for warning in report.warnings:
        context.err(f"warning: {printable(str(warning))}")
    if not report.valid:
        for issue in report.issues:
            context.err(printable(str(issue)))
        return 1
    context.out(VALID_MESSAGE)
    return 0


VALIDATE = Command(
    name="validate",
    summary="check a configuration file and the plugins it names",
    description=(
        "Check the configuration file: every setting, every plugin table against the "
        "installed plugins, and the number of plugins of each type. Prints "
        f"'{VALID_MESSAGE}' or every problem on its own line with its key path."
    ),
    sides=frozenset({Side.SERVER, Side.AGENT}),
    handler=_validate,
    add_flags=_add_flags,
)

COMMANDS: tuple[Command, ...] = (VALIDATE,)
