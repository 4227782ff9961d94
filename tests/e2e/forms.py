"""Quick and full forms of the long end-to-end tests.

A long scenario runs in the test suite in a quick form (fewer rounds, fewer checks) that can
still fail for the defect it is about, and in its full form through a script that sets
:data:`FORM_ENV`: ``scripts/long_tests.py`` for the tests marked ``quick_form``,
``scripts/reliability.py`` for the reliability scenarios of ``tests/reliability``.
"""

from __future__ import annotations

import os
from typing import TypeVar

FORM_ENV = "PYSPIRE_TEST_FORM"
"""``quick`` (the default, run by the test suite) or ``full`` (set by the scripts above)."""

T = TypeVar("T")


def current_form() -> str:
    """The form this run uses: ``quick`` unless :data:`FORM_ENV` says ``full``."""
    form = os.environ.get(FORM_ENV, "quick").strip().lower() or "quick"
    if form not in ("quick", "full"):
        raise ValueError(f"{FORM_ENV} must be 'quick' or 'full', found {form!r}")
    return form


def by_form(*, quick: T, full: T) -> T:
    """The value for the current form."""
    return full if current_form() == "full" else quick
