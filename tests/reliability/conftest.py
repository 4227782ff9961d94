"""Reliability scenarios: helpers importable from the scenario modules, the ``figures`` fixture,
and the terminal summary section that repeats every scenario's figures.

Every scenario module is marked ``reliability`` and ``slow``; its quick or full form comes from
``PYSPIRE_TEST_FORM`` (see ``tests/e2e/forms.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from figures import Figures  # noqa: E402 - importable only after the path is set
from forms import current_form  # noqa: E402

_REPORTED = pytest.StashKey[list[str]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest, record_property: object) -> Figures:
    """The scenario's figures, named after the test (without ``test_``)."""
    reported = request.config.stash.setdefault(_REPORTED, [])

    def record(line: str) -> None:
        record_property("figures", line)  # type: ignore[operator]
        reported.append(line)

    name = request.node.name.removeprefix("test_")
    return Figures(name, record)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_REPORTED, [])
    if lines:
        terminalreporter.section(f"reliability figures ({current_form()} form)")
        for line in lines:
            terminalreporter.write_line(line)
