"""moto as KMS for these tests (see :mod:`pyspire_keymanager_aws_kms.testing` for why its
``Sign`` is corrected in most of them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspire_keymanager_aws_kms.testing import moto_kms_signs_digests

from pyspire_sdk.testing.aws import MotoServer


@pytest.fixture
def kms_signs_digests() -> Iterator[None]:
    """moto's KMS signs DIGEST messages as AWS does, for the duration of a test."""
    with moto_kms_signs_digests():
        yield


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """moto on loopback, found by the AWS SDK through the environment."""
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    return moto_server
