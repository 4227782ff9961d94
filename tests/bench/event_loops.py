"""The event loops a benchmark can run a server process on, and the environment that does it.

``asyncio`` is the standard library's selector loop; ``uvloop`` is libuv's (with its own TLS
transport), chosen for a child process by putting ``uvloop_site`` (a ``sitecustomize`` that
sets uvloop's event loop policy) first on its ``PYTHONPATH``: the server runs unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

LOOPS = ("asyncio", "uvloop")
_SITE = Path(__file__).resolve().parent / "uvloop_site"


def loop_environment(loop: str) -> dict[str, str]:
    """The environment of a child process whose event loops are ``loop``'s."""
    if loop not in LOOPS:
        raise ValueError(f"event loop {loop!r}: expected one of {', '.join(LOOPS)}")
    environment = dict(os.environ)
    if loop == "uvloop":
        path = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = f"{_SITE}{os.pathsep}{path}" if path else str(_SITE)
    return environment
