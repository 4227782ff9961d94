"""The generated codecs agree with Google's protobuf runtime on every hot message, both ways.

For each message: our encoding of a generated message is Google's encoding; our decoder reads
Google's bytes, reordered, with unknown fields between them and followed by a second message,
exactly as Google's runtime reads them; and damaged bytes are refused by both or by neither.
See :mod:`differential`; ``scripts/fuzz_codecs.py`` runs the same properties with a hundred
thousand examples per message.
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

EXAMPLES = 20
"""Examples per message here (each checks all three properties): the quick form, with fresh
examples every run; the full form is ``scripts/fuzz_codecs.py`` (100,000 per message)."""


@pytest.mark.parametrize("full_name", HOT_ROOTS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_codec_agrees_with_googles_runtime(full_name: str, data: st.DataObject) -> None:
    first: Any = data.draw(messages(full_name))
    second: Any = data.draw(messages(full_name))
    check_encode(full_name, first)
    encode = encoder(full_name)
    known = known_numbers(full_name)
    wire = data.draw(scrambled(encode(first), known)) + data.draw(scrambled(encode(second), known))
    check_decode(full_name, wire)
    check_decode(full_name, data.draw(mutations(encode(first))))
