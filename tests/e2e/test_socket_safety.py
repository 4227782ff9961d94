"""``pyspire-server run`` refuses an admin socket directory another local user could take over,
and says why, instead of serving where that user could answer in its place."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import (
    SERVER,
    START_TIMEOUT,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
)

pytestmark = pytest.mark.slow

OTHER_UID = 65534


@pytest.fixture
def root() -> Iterator[Path]:
    path = short_temp_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_the_server_refuses_an_admin_directory_another_user_made_first(root: Path) -> None:
    server = ServerProcess(ServerSettings(root=root, port=free_port()))
    planted = server.socket_path.parent
    planted.mkdir()
    os.chown(planted, OTHER_UID, OTHER_UID)
    planted.chmod(0o777)
    server.spawn([str(SERVER), "run", "-config", str(server.config)])
    try:
        code = server.wait(START_TIMEOUT)
    finally:
        server.kill()
    log = server.log()
    assert code == 1, log
    assert f"socket directory {planted} belongs to uid {OTHER_UID}" in log, log
    assert list(planted.iterdir()) == []
