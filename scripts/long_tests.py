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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dev import run_form

if __name__ == "__main__":
    run_form(
        __doc__ or "",
        sys.argv[1:],
        *("-n", "2", "--dist", "loadfile", "--no-loadscope-reorder", "-m", "quick_form"),
    )
