"""Files the CLI writes for the operator: SVIDs, private keys, tokens.

One writer for all of them, so a private file is never readable by others, not even for an
instant: it is created with its final mode, an existing file has its mode reset before it is
rewritten, and a symbolic link in its place is refused rather than followed (a link planted in
a shared directory must not redirect a private key elsewhere).
"""

from __future__ import annotations

__all__ = ["PRIVATE_FILE_MODE", "PUBLIC_FILE_MODE", "write_file"]

import os
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
"""Mode of written private keys and tokens: readable by their owner only."""

PUBLIC_FILE_MODE = 0o644
"""Mode of written certificates and bundles."""


def write_file(path: Path, data: bytes | str, mode: int = PRIVATE_FILE_MODE) -> None:
    """Create or truncate ``path`` with ``mode`` (also when it existed with another mode) and
    write ``data`` (text as UTF-8). Blocking: call it in a thread from async code."""
    payload = data.encode() if isinstance(data, str) else data
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), mode)
        file.write(payload)
