"""Files the CLI writes for the operator: SVIDs, private keys, tokens.

They are written by the SDK's one writer (:func:`pyspire_sdk.files.write_file_atomically`): the
file appears whole or not at all, carries its final mode from the first byte (a private key or
a token is never readable by others, not even for an instant), and replaces whatever was at the
path, a symbolic link included, rather than writing through it.
"""

from __future__ import annotations

__all__ = ["PRIVATE_FILE_MODE", "PUBLIC_FILE_MODE", "write_file"]

from pathlib import Path

from pyspire_sdk.files import PRIVATE_FILE_MODE, write_file_atomically

PUBLIC_FILE_MODE = 0o644
"""Mode of written certificates and bundles."""


def write_file(path: Path, data: bytes | str, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` (text as UTF-8) with permissions ``mode``. Blocking:
    call it in a thread from async code."""
    write_file_atomically(path, data.encode() if isinstance(data, str) else data, mode=mode)
