"""The ``pyspire-server`` and ``pyspire-agent`` command lines.

Both executables are built from one registry of commands (:mod:`pyspire.cli.registry`); each
command group is a module under :mod:`pyspire.cli.commands`. Flags are spelled like SPIRE's
(``-config``, ``-expandEnv``) and also in kebab case (``--config``, ``--expand-env``).
"""

from __future__ import annotations

from pyspire.cli.app import build_parser, run_cli
from pyspire.cli.flags import add_flag
from pyspire.cli.registry import CliContext, Command

__all__ = ["CliContext", "Command", "add_flag", "build_parser", "run_cli"]
