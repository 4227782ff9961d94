#!/usr/bin/env python3
"""Set up a development environment and run pyspire's checks or its demo.

    python3 scripts/dev.py test      # install everything into .venv, then lint, type-check, test
    python3 scripts/dev.py demo      # install everything into .venv, then run the main job
    python3 scripts/dev.py setup     # only install

Needs nothing but Python 3.11+. The virtual environment lives in ``.venv`` at the repository
root and is refreshed whenever a ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".pyspire-installed"


def distributions() -> list[Path]:
    """Every distribution in the workspace, dependencies first (SDK, kernel, plugins, examples)."""
    found = [ROOT / "plugin-sdk", ROOT / "kernel"]
    for folder in ("plugins", "examples"):
        found += sorted(path.parent for path in (ROOT / folder).glob("*/pyproject.toml"))
    return found


def dev_requirements() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["dependency-groups"]["dev"])


def fingerprint() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for path in [ROOT / "pyproject.toml", *(d / "pyproject.toml" for d in distributions())]:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(*command: str | Path, **options: object) -> None:
    printable = " ".join(str(part) for part in command)
    print(f"+ {printable}", flush=True)
    result = subprocess.run([str(part) for part in command], check=False, cwd=ROOT, **options)  # type: ignore[call-overload]
    if result.returncode != 0:
        sys.exit(result.returncode)


def run_form(usage: str, argv: list[str], *pytest_args: str) -> None:
    """What the scripts of full forms share: ``--quick`` for the quick form (the test suite's),
    ``-h`` for ``usage``, ``.venv`` set up, then pytest with ``pytest_args`` and the rest of
    ``argv``, the form in the long tests' one switch (``tests/e2e/forms.py``)."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from forms import FORM_ENV

    form = "full"
    if argv[:1] == ["--quick"]:
        form = "quick"
        argv = argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        sys.exit(usage)
    setup()
    run(BIN / "pytest", *pytest_args, *argv, env={**os.environ, FORM_ENV: form})


def setup() -> None:
    """Create .venv and install the workspace into it, unless it is already current."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script must explain itself on old Pythons
        sys.exit("pyspire needs Python 3.11 or newer")
    wanted = fingerprint()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"+ creating {VENV.relative_to(ROOT)}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = (PYTHON, "-m", "pip", "--disable-pip-version-check", "-q")
    run(*pip, "install", "--upgrade", "pip")
    run(*pip, "install", *dev_requirements())
    editable: list[str | Path] = []
    for distribution in distributions():
        editable += ["-e", distribution]
    run(*pip, "install", "--no-build-isolation", *editable)
    STAMP.write_text(wanted)


def test(extra: list[str]) -> None:
    """Lint, type-check and run the whole test suite, in that order; stop at the first failure."""
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(
        BIN / "mypy",
        "plugin-sdk/src/pyspire_sdk",
        "kernel/src/pyspire",
        *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("plugins/*/src/*")),
        *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("examples/*/src/*")),
    )
    # Two workers, one per core; a module stays on one worker, so its fixtures are set up once.
    # Modules are handed out in collection order (testpaths puts the long end-to-end modules
    # first): xdist's default reorder by test count would hand out the one-test modules, the
    # longest, last, so one worker ends the run alone on them.
    run(BIN / "pytest", "-n", "2", "--dist", "loadfile", "--no-loadscope-reorder", *extra)


def demo() -> None:
    """The main job: the quickstart (examples/quickstart/quickstart.py)."""
    run(PYTHON, "examples/quickstart/quickstart.py")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("setup", "test", "demo"):
        sys.exit(__doc__)
    setup()
    if argv[0] == "test":
        test(argv[1:])
    elif argv[0] == "demo":
        demo()


if __name__ == "__main__":
    main(sys.argv[1:])
