#!/usr/bin/env python3
"""Run the reliability scenarios of tests/reliability in their full form and print their figures.

    python3 scripts/reliability.py                 # every scenario, full form (about 2.5 hours)
    python3 scripts/reliability.py -k soak         # arguments after the options go to pytest
    python3 scripts/reliability.py --quick         # the quick form the test suite runs
    python3 scripts/reliability.py --junitxml=r.xml

The full form is long: the rotation soak alone takes ten minutes, and fuzzing sends 10,000
requests of every type to every listener. Each scenario prints one ``RELIABILITY`` line with
its figures; the run ends with all of them in a "reliability figures" section. Like
``scripts/dev.py``, it sets up ``.venv`` first when needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "reliability"))

from dev import BIN, run, setup  # noqa: E402 - the script's folder is on the path only now
from figures import FORM_ENV  # noqa: E402

SCENARIOS = "tests/reliability"


def main(argv: list[str]) -> None:
    form = "full"
    if argv[:1] == ["--quick"]:
        form = "quick"
        argv = argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        sys.exit(__doc__)
    setup()
    run(BIN / "pytest", SCENARIOS, *argv, env={**os.environ, FORM_ENV: form})


if __name__ == "__main__":
    main(sys.argv[1:])
