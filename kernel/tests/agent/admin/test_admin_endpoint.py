"""The agent's admin socket follows the admin socket rules: a 0700 directory of the agent's
user, refused when unsafe, unreachable by other users, bounded connections, removed on close."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyspire.agent.admin import AdminEndpoint
from pyspire.transport.limits import ConnectionLimits
from pyspire.transport.unix import SocketPathError

OTHER_UID = 65534
WAIT = 5.0


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory every user may enter: only the admin directory keeps others out."""
    folder = Path(tempfile.mkdtemp(prefix="pyspire-adm-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_the_directory_is_made_private_whatever_the_umask(socket_dir: Path) -> None:
    path = socket_dir / "private" / "admin.sock"
    old_umask = os.umask(0)
    try:
        async with AdminEndpoint(path, []):
            directory = path.parent.stat()
            assert stat.S_IMODE(directory.st_mode) == 0o700
            assert directory.st_uid == os.geteuid()
            assert path.is_socket()
            assert stat.S_IMODE(path.stat().st_mode) == 0o770
    finally:
        os.umask(old_umask)
    assert not path.exists()


async def test_a_directory_others_may_enter_is_refused_and_left_alone(socket_dir: Path) -> None:
    directory = socket_dir / "private"
    directory.mkdir()
    directory.chmod(0o755)
    stale = directory / "admin.sock"
    with socket.socket(socket.AF_UNIX) as earlier:
        earlier.bind(str(stale))
    endpoint = AdminEndpoint(stale, [])
    with pytest.raises(SocketPathError, match="has mode 0755, more than the 0700"):
        await endpoint.start()
    await endpoint.close()
    assert stale.is_socket()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
async def test_a_directory_another_user_made_is_refused(socket_dir: Path) -> None:
    directory = socket_dir / "private"
    directory.mkdir(mode=0o700)
    os.chown(directory, OTHER_UID, OTHER_UID)
    with pytest.raises(SocketPathError, match="belongs to uid 65534"):
        await AdminEndpoint(directory / "admin.sock", []).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another uid needs root")
async def test_another_user_cannot_reach_the_socket(socket_dir: Path) -> None:
    path = socket_dir / "private" / "admin.sock"
    # The probe drops to the other uid itself: the interpreter may live where that user
    # cannot read it.
    probe = (
        "import os, socket, sys\n"
        f"os.setgroups([]); os.setgid({OTHER_UID}); os.setuid({OTHER_UID})\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('connected')\n"
    )
    async with AdminEndpoint(path, []):
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-I", "-c", probe, str(path)],
            capture_output=True,
            text=True,
            timeout=WAIT * 4,
            check=True,
            cwd="/",
        )
    assert result.stdout.strip() == "refused"


async def test_a_connection_without_a_call_is_closed(socket_dir: Path) -> None:
    limits = ConnectionLimits(max_connections=4, first_request_timeout=0.2)
    async with AdminEndpoint(socket_dir / "a" / "admin.sock", [], limits=limits) as endpoint:
        reader, writer = await asyncio.open_unix_connection(str(endpoint.socket_path))
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
            writer.close()
            while endpoint.open_connections:  # noqa: ASYNC110 - counts have no event
                await asyncio.sleep(0.01)
