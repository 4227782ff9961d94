"""moto's KMS, unpatched, on loopback for these tests."""

from __future__ import annotations

import pytest

from pyspire_sdk.testing.aws import MotoServer


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """moto on loopback, found by the AWS SDK through the environment."""
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    return moto_server
