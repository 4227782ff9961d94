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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dev import run_form

SCENARIOS = "tests/reliability"

if __name__ == "__main__":
    run_form(__doc__ or "", sys.argv[1:], SCENARIOS)
