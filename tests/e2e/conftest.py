"""Shared set-up of the end-to-end tests: the helper module :mod:`processes` is importable from
the test modules (its directory is put on ``sys.path``), and a failing test that used a
``deployment`` gets the logs of every process it started attached to its report."""

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        deployment = getattr(item, "funcargs", {}).get("deployment")
        logs = getattr(deployment, "logs", None)
        if callable(logs):
            report.sections.append(("pyspire process logs", logs()))
    return report
