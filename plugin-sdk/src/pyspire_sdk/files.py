"""Private state on disk: owner-only directories and atomic, durable, owner-only files.

Keys, agent state and databases must never be readable by other local users, and a crash or
power loss while one is written must leave either the old content or the new, never a torn
file. Every plugin and the kernel write such state the same way, through these functions:
they block, so call them in a worker thread (``asyncio.to_thread``). Files meant for others to
read (a published trust bundle, a certificate) get the same atomic write with another mode,
through :func:`write_file_atomically`.
"""

from __future__ import annotations

__all__ = [
    "PRIVATE_DIRECTORY_MODE",
    "PRIVATE_FILE_MODE",
    "LooseFileModeError",
    "make_private_directory",
    "read_private_file",
    "write_file_atomically",
    "write_private_file",
]

import contextlib
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_DIRECTORY_MODE = 0o700
"""Directories holding private state: the owner alone may list, enter or change them."""

PRIVATE_FILE_MODE = 0o600
"""Files holding private state: the owner alone may read or write them."""


def make_private_directory(path: Path, *, tighten: bool = False) -> None:
    """Create ``path`` and any missing parents, each with mode 0700 whatever the umask.

    Existing directories are left as they are, except that with ``tighten`` an existing
    ``path`` owned by this process's user loses any permission beyond 0700 (a daemon's own
    state directory; never one it merely writes into). Raises ``NotADirectoryError`` when
    ``path`` exists and is not a directory, and ``OSError`` when a directory cannot be made.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else
            folder.mkdir(mode=PRIVATE_DIRECTORY_MODE)
            os.chmod(folder, PRIVATE_DIRECTORY_MODE)  # mkdir's mode is filtered by the umask
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    if tighten and path not in missing and path.stat().st_uid == os.getuid():
        os.chmod(path, PRIVATE_DIRECTORY_MODE)


class LooseFileModeError(PermissionError):
    """A file holding a secret grants its group or others some access."""


def read_private_file(path: Path) -> bytes:
    """The content of ``path``, a regular file holding a secret (a private key) that its group
    and others may not access at all, as OpenSSH requires of private keys.

    The mode is checked on the descriptor the content is read from, so the file cannot be
    swapped in between. Raises :class:`LooseFileModeError` naming the file and its mode when
    the mode grants anything to group or others, ``IsADirectoryError`` or ``OSError`` for a
    path that is not a readable regular file.
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            raise LooseFileModeError(
                f"{path} has mode {mode:04o}: a private key may not be accessible to its "
                f"group or others; run chmod 600 {path}"
            )
        return handle.read()


def write_private_file(path: Path, data: bytes) -> bool:
    """Replace the file at ``path`` with ``data``: atomically, durably, with mode 0600.

    See :func:`write_file_atomically`, which this is with :data:`PRIVATE_FILE_MODE`.
    """
    return write_file_atomically(path, data, mode=PRIVATE_FILE_MODE)


def write_file_atomically(path: Path, data: bytes, *, mode: int) -> bool:
    """Replace the file at ``path`` with ``data``: atomically, durably, with permissions
    ``mode``.

    The data goes to a temporary file in the same directory (with ``mode`` from its creation),
    which is synced, renamed over ``path`` and followed by a sync of the directory. On failure
    the old file is untouched, no temporary file is left behind, and the ``OSError`` is
    raised. Returns whether the rename itself was made durable: some file systems cannot sync
    a directory, and the new file is in place either way, so that is reported, not raised.
    """
    # One spelling of the place for both names: mkstemp hands back an absolute path, and a
    # relative ``path`` resolved through the working directory may reach the same directory
    # through another mount (a bind mount), where rename refuses to cross.
    path = path.absolute()
    directory = path.parent
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    try:
        directory_descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(directory_descriptor)
        finally:
            os.close(directory_descriptor)
    except OSError:
        return False
    return True
