"""What a statement imports, seen from a fresh interpreter.

A plugin that calls out through a heavy client library (aiohttp, a cloud SDK, a Kubernetes
client) should not load it when pyspire merely registers the plugin: every process that lists
plugins would pay for it. The import state of the test process is polluted by other tests, so
the statement runs in a new interpreter.
"""

from __future__ import annotations

__all__ = ["top_level_modules_imported_by"]

import subprocess
import sys

_REPORT = "import sys; print('\\n'.join(sorted({name.split('.')[0] for name in sys.modules})))"


def top_level_modules_imported_by(statement: str, *, timeout: float = 60) -> frozenset[str]:
    """The top-level names of every module loaded after running ``statement`` (Python source,
    e.g. ``"import my_plugin.plugin as p; p.pyspire_node_attestors()"``) in a new interpreter.
    Raises ``subprocess.CalledProcessError`` when the statement fails."""
    result = subprocess.run(  # noqa: S603 (the statement is the caller's own test code)
        [sys.executable, "-c", f"{statement}\n{_REPORT}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    return frozenset(result.stdout.split())
