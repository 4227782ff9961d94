"""The PKCS #7 reader on AWS's shapes and on hostile bytes: it returns the signed content or
raises SignatureError, never anything else."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspire_nodeattestor_aws_iid.pkcs7 import (
    SignatureError,
    UnknownSignerError,
    verify_signed_data,
)
from pyspire_nodeattestor_aws_iid.testing import AwsSigner

DOCUMENT = '{\n  "accountId" : "123456789012",\n  "region" : "us-west-2"\n}'
SIGNER = AwsSigner()


def signed(streaming: bool) -> bytes:
    return base64.b64decode(SIGNER.rsa2048(DOCUMENT, streaming=streaming))


@pytest.mark.parametrize("streaming", [True, False], ids=["ber", "der"])
def test_the_content_comes_back_from_either_encoding(streaming: bool) -> None:
    data = signed(streaming)
    assert data[:2] == (b"\x30\x80" if streaming else b"\x30\x82")
    assert verify_signed_data(data, [SIGNER.certificate]) == DOCUMENT.encode()


def test_a_signer_that_is_not_trusted_is_unknown() -> None:
    with pytest.raises(UnknownSignerError, match="not a configured AWS certificate"):
        verify_signed_data(signed(True), [SIGNER.legacy_certificate, AwsSigner().certificate])


@pytest.mark.parametrize("streaming", [True, False], ids=["ber", "der"])
def test_every_truncation_is_refused(streaming: bool) -> None:
    data = signed(streaming)
    for length in range(len(data)):
        with pytest.raises(SignatureError):
            verify_signed_data(data[:length], [SIGNER.certificate])


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(SignatureError, match="nests too deeply"):
        verify_signed_data(b"\x30\x80" * 200, [SIGNER.certificate])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_changed_bytes_never_verify_as_other_content(data: st.DataObject) -> None:
    original = signed(data.draw(st.booleans()))
    position = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255))
    changed = original[:position] + bytes([value]) + original[position + 1 :]
    try:
        content = verify_signed_data(changed, [SIGNER.certificate])
    except SignatureError:
        return
    assert content == DOCUMENT.encode()  # only a change outside what is signed
