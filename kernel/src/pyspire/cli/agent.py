"""``pyspire-agent``: the agent's command line."""

from __future__ import annotations

__all__ = ["PROG", "main"]

from collections.abc import Sequence

from pyspire.catalog import Side
from pyspire.cli import app

PROG = "pyspire-agent"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyspire-agent`` with ``argv`` (default: the process arguments); return the status."""
    return app.main(Side.AGENT, PROG, argv)
