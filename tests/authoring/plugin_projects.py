"""Plugin projects as their authors use them: installed with pip into an environment pyspire
runs from, tested with pytest in their own process, listed by ``pyspire-<side> plugins``.

Everything runs in subprocesses with the workspace's interpreter, because the workspace's own
pytest configuration (auto mode, import mode) must not leak into a plugin's project: their tests
run in pytest-asyncio's default strict mode, as they do for an author outside this repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.testing.distributions import environment_with_path

PIP_TIMEOUT = 300
PYTEST_TIMEOUT = 300
CLI_TIMEOUT = 60


def script(name: str) -> str:
    """The console script ``name`` installed beside the running interpreter."""
    return str(Path(sys.executable).parent / name)


def environment(site: Path, **extra: str) -> dict[str, str]:
    """The process environment with ``site`` (a pip ``--target``) first on the import path."""
    environ = environment_with_path(
        site, {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    )
    environ.update(extra)
    return environ


def install(projects: Sequence[Path], site: Path) -> None:
    """``pip install`` the projects into the folder ``site``, as an author installs a plugin
    into an existing environment (here the workspace's, which already has pyspire)."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            *map(str, projects),
        ],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@dataclass(frozen=True)
class Outcome:
    """One test's result: ``passed``, ``failure``, ``error`` or ``skipped``, with the report.

    ``test`` is the dotted path of the junit report: folders, module, class and test name, e.g.
    ``datastore.tests.test_demo_datastore.TestContract.test_get_entry_missing``.
    """

    test: str
    result: str
    message: str


@dataclass(frozen=True)
class PytestRun:
    """What a pytest subprocess reported, test by test, and what it printed."""

    outcomes: tuple[Outcome, ...]
    output: str

    def under(self, prefix: str) -> list[Outcome]:
        """The outcomes of the tests whose dotted path starts with ``prefix``."""
        return [outcome for outcome in self.outcomes if outcome.test.startswith(prefix)]

    def not_passed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.result not in ("passed", "skipped")]


def _outcomes(report: Path) -> tuple[Outcome, ...]:
    outcomes: dict[str, Outcome] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):  # noqa: S314 - our report
        test = f"{case.get('classname', '')}.{case.get('name')}"
        result, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                result = tag
                message = f"{element.get('message', '')}\n{element.text or ''}"
        # A test failing in its call and again in teardown is reported twice; keep the first.
        outcomes.setdefault(test, Outcome(test, result, message))
    return tuple(outcomes.values())


def run_pytest(
    paths: Sequence[Path], *, cwd: Path, env: Mapping[str, str], config: Path | None = None
) -> PytestRun:
    """Run pytest on ``paths`` in a subprocess, without the cache plugin; check that
    pytest-asyncio ran in strict mode, and return every test's outcome."""
    report = cwd / f"report-{len(list(cwd.glob('report-*.xml')))}.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
        f"--rootdir={cwd}",
    ]
    if config is not None:
        command.append(f"--config-file={config}")
    completed = subprocess.run(
        [*command, *map(str, paths)],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=PYTEST_TIMEOUT,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert re.search(r"^asyncio: mode=(Mode\.)?strict,", completed.stdout, re.M | re.I), output
    assert report.exists(), output
    return PytestRun(_outcomes(report), output)


def listed_plugins(side: str, env: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(type, name, distribution)`` rows of ``pyspire-<side> plugins``."""
    completed = subprocess.run(
        [script(f"pyspire-{side}"), "plugins"],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    header, *rows = completed.stdout.splitlines()
    assert header.split()[:3] == ["TYPE", "NAME", "DISTRIBUTION"], completed.stdout
    return [(row.split()[0], row.split()[1], row.split()[2]) for row in rows if row.strip()]
