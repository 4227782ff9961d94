"""Shared set-up of the cross-process tests (``tests/e2e``, ``tests/reliability``): the process
harness :mod:`processes` (in ``tests/e2e``) is importable from every test module, and a failing
test that used a :class:`~processes.Deployment`, a :class:`~processes.Process` or a fixture with
a ``process_logs()`` method gets the logs of every process involved attached to its report."""

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path

import pytest

HARNESS = str(Path(__file__).resolve().parent / "e2e")
if HARNESS not in sys.path:
    sys.path.insert(0, HARNESS)

from processes import Deployment, Process  # noqa: E402 - importable only after the path is set


def _process_logs(item: pytest.Item) -> str:
    sections = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Deployment):
            sections.append(value.logs())
        elif isinstance(value, Process):
            sections.append(value.all_logs())
        elif callable(getattr(value, "process_logs", None)):  # a fixture holding several
            sections.append(value.process_logs())
    return "\n".join(sections)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        logs = _process_logs(item)
        if logs:
            report.sections.append(("pyspire process logs", logs))
    return report
