"""CONTRIBUTING.md's "Adding a plugin" walk-through works as written, outside this repository.

Every snippet of the section introduced by a file path (a line such as
``src/pyspire_workloadattestor_session/attestor.py``: above a fenced block) is written to that
path of a fresh project; nothing else is added. The project then installs with pip into an
environment that has pyspire, passes its own tests in pytest-asyncio's strict mode, and is
listed by ``pyspire-agent plugins``, as the walk-through promises.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from plugin_projects import environment, install, listed_plugins, run_pytest

CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"
SECTION = "## Adding a plugin (a walk-through)"
DISTRIBUTION = "pyspire-workloadattestor-session"
PRINT_TABLE = (
    "from pyspire_sdk.config import settings_table; "
    "from pyspire_workloadattestor_session.attestor import SessionConfig; "
    "print(settings_table(SessionConfig))"
)

_FILE_LINE = re.compile(r"^\s*`(?P<path>[\w./-]+)`:\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>\w*)\s*$")


@dataclass(frozen=True)
class Snippet:
    """One fenced block of the section: its language, its text and the file it is for."""

    language: str
    text: str
    path: str | None


def walkthrough() -> str:
    text = CONTRIBUTING.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def snippets(section: str) -> list[Snippet]:
    found: list[Snippet] = []
    lines = section.splitlines()
    path: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if named := _FILE_LINE.match(line):
            path = named["path"]
        elif fence := _FENCE.match(line):
            body: list[str] = []
            index += 1
            while lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            found.append(Snippet(fence["language"], textwrap.dedent("\n".join(body)) + "\n", path))
            path = None
        elif line.strip():
            path = None if not line.startswith(" ") else path
        index += 1
    return found


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return {s.path: s.text for s in snippets(walkthrough()) if s.path is not None}


def test_every_code_snippet_is_a_complete_file(files: dict[str, str]) -> None:
    code = [s for s in snippets(walkthrough()) if s.language in ("python", "toml", "markdown")]
    assert [s.path for s in code if s.path is None] == []
    assert sorted(files) == [
        "README.md",
        "pyproject.toml",
        "src/pyspire_workloadattestor_session/attestor.py",
        "src/pyspire_workloadattestor_session/plugin.py",
        "tests/test_session.py",
    ]
    project = tomllib.loads(files["pyproject.toml"])
    assert project["build-system"]["build-backend"] == "hatchling.build"
    assert project["project"]["name"] == DISTRIBUTION
    assert project["project"]["version"]
    assert "asyncio_mode" not in project["tool"]["pytest"]["ini_options"]
    for path, text in files.items():
        if path.endswith(".py"):
            ast.parse(text, filename=path)  # complete modules, imports included


def test_the_console_snippets_install_test_and_list(files: dict[str, str]) -> None:
    console = "".join(s.text for s in snippets(walkthrough()) if s.language == "console")
    assert "pyspire-plugin new --type workload_attestor --name session\n" in console
    assert "python -m pip install -e '.[testing]'\n" in console
    assert "python -m pytest\n" in console
    assert "pyspire-agent plugins\n" in console


def test_the_walkthrough_package_installs_passes_its_tests_and_is_listed(
    files: dict[str, str], tmp_path: Path
) -> None:
    project = tmp_path / DISTRIBUTION
    for path, text in files.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(text)
    site = tmp_path / "site"
    install([project], site)

    run = run_pytest([project / "tests"], cwd=project, env=environment(site))
    assert run.outcomes, run.output
    assert run.not_passed() == [], run.output
    assert any("test_reports_the_session" in outcome.test for outcome in run.outcomes)

    rows = listed_plugins("agent", environment(site, PYSPIRE_PLUGINS_ALLOW=DISTRIBUTION))
    assert rows == [("workload_attestor", "session", DISTRIBUTION)]

    table = subprocess.run(
        [sys.executable, "-c", PRINT_TABLE],
        env=environment(site),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert table.strip() in files["README.md"]
