"""This server's ID, which keeps its aliases apart from other servers' of its trust domain.

Read from ``key_identifier_file`` (relative paths below the data directory), or made there
with a new random ID (mode 0600, written atomically) when the file does not exist, as SPIRE
does; or taken from ``key_identifier_value``. A lost file means a new ID: the keys of the old
one are then found by no one and disposed of as stale. Blocking; callers use a thread.
"""

from __future__ import annotations

__all__ = ["load_or_create_server_id"]

import uuid
from pathlib import Path

from pyspire_sdk.errors import PluginError
from pyspire_sdk.files import make_private_directory, write_private_file


def _valid(server_id: str) -> bool:
    return 0 < len(server_id) <= 64 and all(
        character.isascii() and (character.isalnum() or character in "-_")
        for character in server_id
    )


def load_or_create_server_id(path: Path) -> str:
    """The server ID stored at ``path``, made and stored there when the file is missing;
    PluginError naming the file when it cannot be read, written or holds no valid ID."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        server_id = str(uuid.uuid4())
        try:
            make_private_directory(path.parent)
            write_private_file(path, (server_id + "\n").encode("ascii"))
        except OSError as error:
            raise PluginError(
                f"cannot write key identifier file {path}: {error.strerror or error}"
            ) from None
        return server_id
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise PluginError(f"cannot read key identifier file {path}: {reason}") from None
    if not _valid(text):
        raise PluginError(
            f"key identifier file {path} does not hold a server ID (1 to 64 letters, digits, "
            "'-' or '_')"
        )
    return text
