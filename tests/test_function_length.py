"""Kernel functions stay short enough to read at once.

A function longer than :data:`MAX_FUNCTION_LINES` lines (from its ``def`` to its last line,
docstring included; decorators and generated code left out) is doing several jobs: compose it
of named steps instead, as the server and agent runtimes are.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "kernel" / "src" / "pyspire"
GENERATED = KERNEL / "proto" / "gen"
MAX_FUNCTION_LINES = 60


def long_functions(folder: Path, *, skip: Path | None = None) -> list[str]:
    """``path:line name (n lines)`` for each function under ``folder`` over the limit."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        if skip is not None and path.is_relative_to(skip):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    where = path.relative_to(folder)
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_kernel_function_is_longer_than_the_limit() -> None:
    assert long_functions(KERNEL, skip=GENERATED) == []


def _function(name: str, statements: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{number} = {number}\n" for number in range(statements))
    return f"{indent}def {name}():\n{body}"


def test_the_check_sees_a_long_function_and_skips_generated_code(tmp_path: Path) -> None:
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "made.py").write_text(_function("made", MAX_FUNCTION_LINES))
    (tmp_path / "short.py").write_text(_function("short", MAX_FUNCTION_LINES - 1))
    (tmp_path / "long.py").write_text(
        "class Thing:\n" + _function("long", MAX_FUNCTION_LINES, indent="    ")
    )
    assert long_functions(tmp_path, skip=tmp_path / "gen") == [
        f"long.py:2 long ({MAX_FUNCTION_LINES + 1} lines)"
    ]
