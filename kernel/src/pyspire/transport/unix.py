"""Unix socket paths: private directories, stale sockets, and the socket's own mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pyspire_sdk.errors import PyspireError

MAX_SOCKET_PATH_BYTES = 107


class SocketPathError(PyspireError):
    """A socket path cannot be used; the message names the path and why."""


def prepare_socket_path(path: Path, *, directory_mode: int) -> None:
    """Make the socket's directory (and missing parents) with ``directory_mode``, tighten an
    existing directory we own that is looser, and remove a stale socket left by an earlier run.

    Anything else at ``path`` (a regular file, a directory) is refused rather than deleted.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(f"socket path {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes")
    directory = path.parent
    directory.mkdir(mode=directory_mode, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~directory_mode:
        os.chmod(directory, directory_mode)
    try:
        existing = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(existing.st_mode):
        raise SocketPathError(f"socket path {path} exists and is not a socket")
    path.unlink()


def set_socket_mode(path: Path, mode: int) -> None:
    """Give a freshly bound socket its mode (bind honours the umask, not our intent)."""
    os.chmod(path, mode)
