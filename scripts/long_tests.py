#!/usr/bin/env python3
"""Run the full forms of the long tests that the test suite runs in a quick form.

    python3 scripts/long_tests.py                  # every full form (tests marked quick_form)
    python3 scripts/long_tests.py -k nested        # arguments after the options go to pytest
    python3 scripts/long_tests.py --quick          # the quick forms, as the test suite runs them

``python3 scripts/dev.py test`` (and CI) runs only the quick forms; this script is run by hand
before a release or after a change to what a long test exercises. It sets ``PYSPIRE_TEST_FORM``
(``tests/e2e/forms.py``) and selects the tests marked ``quick_form``. The reliability scenarios
have their own script, ``scripts/reliability.py``; the codec fuzzing, ``scripts/fuzz_codecs.py``.
Like ``scripts/dev.py``, it sets up ``.venv`` first when needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dev import BIN, run, setup  # noqa: E402 - the script's folder is on the path only now

FORM_ENV = "PYSPIRE_TEST_FORM"
"""Read by ``tests/e2e/forms.py``."""


def main(argv: list[str]) -> None:
    form = "full"
    if argv[:1] == ["--quick"]:
        form = "quick"
        argv = argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        sys.exit(__doc__)
    setup()
    command = [BIN / "pytest", "-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]
    run(*command, "-m", "quick_form", *argv, env={**os.environ, FORM_ENV: form})


if __name__ == "__main__":
    main(sys.argv[1:])
