"""The ``pyspire-plugin`` command: ``pyspire-plugin new --type TYPE --name NAME [--dir DIR]``."""

from __future__ import annotations

__all__ = ["main"]

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pyspire_sdk._scaffold.kinds import SCAFFOLD_KINDS
from pyspire_sdk._scaffold.naming import PluginNames, check_plugin_name
from pyspire_sdk._scaffold.writer import ScaffoldError, write_plugin_package


def _plugin_name(text: str) -> str:
    try:
        return check_plugin_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyspire-plugin", description="Tools for writing pyspire plugins."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    new = commands.add_parser(
        "new",
        help="write a ready-to-install plugin package",
        description=(
            "Write a plugin package of the given type: pyproject.toml with its entry point, a "
            "typed configuration, a working minimal implementation, a README with the settings "
            "table, and tests that run the SDK's contract suite of the type."
        ),
    )
    new.add_argument("--type", required=True, choices=list(SCAFFOLD_KINDS), dest="plugin_type")
    new.add_argument(
        "--name", required=True, type=_plugin_name, help="the plugin's name in TOML, e.g. session"
    )
    new.add_argument(
        "--dir",
        type=Path,
        dest="directory",
        help="where to write the package (default: ./<distribution name>); must not exist or "
        "be empty",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 written, 1 not written, 2 bad usage)."""
    arguments = _parser().parse_args(argv)
    names = PluginNames(arguments.plugin_type, arguments.name)
    target: Path = arguments.directory or Path(names.distribution)
    try:
        write_plugin_package(arguments.plugin_type, arguments.name, target)
    except ScaffoldError as error:
        print(f"pyspire-plugin: error: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {names.distribution} to {target}\n"
        "next:\n"
        f"  cd {target}\n"
        "  python -m pip install -e '.[testing]'   # into the environment pyspire runs from\n"
        "  python -m pytest\n"
        f"then name it in the configuration as [<side>.plugins.{arguments.plugin_type}."
        f"{arguments.name}] (see README.md)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
