"""Writing files plugins hand to others (published bundles, stored SVIDs) without half states.

A reader of a file a plugin writes must see either the old content or the new, never a mix,
and a private key must never be readable by others, not even for the moment between creating
the file and changing its mode. :func:`write_file_atomically` gives both; it blocks, so plugins
call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

__all__ = ["PRIVATE_FILE_MODE", "write_file_atomically"]

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
"""Read and write for the owner only: the mode for keys and anything holding one."""


def write_file_atomically(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace the file at ``path`` with ``data`` in one step, with permissions ``mode``.

    The data goes to a temporary file in the same directory, created with ``mode`` from the
    start, flushed to disk and renamed over ``path``; the directory is then synced so the rename
    survives a crash (where the file system allows). On failure the old file is untouched, no
    temporary file is left behind and the ``OSError`` propagates. The directory must exist.
    """
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
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
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory
        directory = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
