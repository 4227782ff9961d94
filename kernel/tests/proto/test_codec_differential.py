"""The generated codecs agree with Google's protobuf runtime on every hot message, both ways.

See :mod:`differential` for what is generated; ``scripts/fuzz_codecs.py`` runs the same
properties with a hundred thousand examples per message.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .differential import (
    HOT_ROOTS,
    check_decode,
    check_encode,
    encoder,
    known_numbers,
    messages,
    mutations,
    scrambled,
)

EXAMPLES = 30
"""Examples per message and property here; the fuzz script runs many more."""

_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("full_name", HOT_ROOTS)
@_SETTINGS
@given(data=st.data())
def test_encoding_is_googles(full_name: str, data: st.DataObject) -> None:
    check_encode(full_name, data.draw(messages(full_name)))


@pytest.mark.parametrize("full_name", HOT_ROOTS)
@_SETTINGS
@given(data=st.data())
def test_decoding_reads_what_google_reads(full_name: str, data: st.DataObject) -> None:
    first: Any = data.draw(messages(full_name))
    second: Any = data.draw(messages(full_name))
    encode = encoder(full_name)
    known = known_numbers(full_name)
    wire = data.draw(scrambled(encode(first), known)) + data.draw(scrambled(encode(second), known))
    check_decode(full_name, wire)


@pytest.mark.parametrize("full_name", HOT_ROOTS)
@_SETTINGS
@given(data=st.data())
def test_damaged_bytes_fail_as_google_fails(full_name: str, data: st.DataObject) -> None:
    message: Any = data.draw(messages(full_name))
    check_decode(full_name, data.draw(mutations(encoder(full_name)(message))))
