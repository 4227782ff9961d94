"""``pyspire-server``: the server's command line."""

from __future__ import annotations

__all__ = ["PROG", "main"]

from collections.abc import Sequence

from pyspire.catalog import Side
from pyspire.cli import app

PROG = "pyspire-server"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyspire-server`` with ``argv`` (default: the process arguments); return the status."""
    return app.main(Side.SERVER, PROG, argv)
