"""Fuzz the generated protobuf codecs against Google's runtime with many examples.

    .venv/bin/python scripts/fuzz_codecs.py [--examples 100000] [--message NAME ...]

Runs the properties of ``kernel/tests/proto/differential.py`` (the test suite runs them with
twenty examples) for every hot message: our encoding is Google's, our decoder reads what
Google's reads (fields reordered, unknown fields of every wire type, the message twice), and
damaged bytes fail in both or in neither. Exits 1 on the first counterexample, which hypothesis
prints in full.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO_ROOT = Path(__file__).resolve().parents[1]
PROPERTIES = REPO_ROOT / "kernel" / "tests" / "proto" / "differential.py"


def load_properties() -> Any:
    """The test suite's property module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("codec_differential", PROPERTIES)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def fuzz_message(properties: Any, name: str, fuzz: settings) -> None:
    """Run the three properties on message ``name``; AssertionError on a counterexample."""

    @fuzz
    @given(data=st.data())
    def encode(data: st.DataObject) -> None:
        properties.check_encode(name, data.draw(properties.messages(name)))

    @fuzz
    @given(data=st.data())
    def decode(data: st.DataObject) -> None:
        encoder = properties.encoder(name)
        known = properties.known_numbers(name)
        first = encoder(data.draw(properties.messages(name)))
        second = encoder(data.draw(properties.messages(name)))
        wire = data.draw(properties.scrambled(first, known))
        wire += data.draw(properties.scrambled(second, known))
        properties.check_decode(name, wire)

    @fuzz
    @given(data=st.data())
    def damaged(data: st.DataObject) -> None:
        encoded = properties.encoder(name)(data.draw(properties.messages(name)))
        properties.check_decode(name, data.draw(properties.mutations(encoded)))

    for check in (encode, decode, damaged):
        try:
            check()
        except AssertionError:
            print(f"fuzz_codecs: {name}: {check.__name__} failed", file=sys.stderr)
            raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=100_000, help="per message and property")
    parser.add_argument("--message", action="append", help="only these messages (full names)")
    args = parser.parse_args()
    properties = load_properties()
    fuzz = settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    for name in args.message or properties.HOT_ROOTS:
        started = time.monotonic()
        fuzz_message(properties, name, fuzz)
        elapsed = time.monotonic() - started
        print(f"fuzz_codecs: {name}: {3 * args.examples} examples in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
