"""Shared set-up of the plugin-authoring tests: the helper module :mod:`plugin_projects` is
importable from the test modules (its directory is put on ``sys.path``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
