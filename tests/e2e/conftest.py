"""A private Docker Engine shared by the end-to-end tests of container workloads, or a skip
saying why none can start here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspire_workloadattestor_docker.testing import DockerDaemon, engine_unavailable_reason


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[DockerDaemon]:
    reason = engine_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    daemon = DockerDaemon()
    try:
        daemon.start()
    except RuntimeError as error:
        pytest.skip(f"no Docker Engine could start: {str(error)[-2000:]}")
    try:
        yield daemon
    finally:
        daemon.stop()
