"""Which server of a trust domain this is: a random ID kept in the data directory.

Several servers of one trust domain may share one datastore, each with its own key manager and
its own CA. What belongs to one server alone (its CA journal: which keys its slots hold) is
stored under that server's ID, so servers never read or overwrite each other's. The ID is made
at first start and kept in ``<data_dir>/server-id``, beside the keys it goes with: losing the
data directory loses both, and the server starts afresh with new keys under a new ID.
"""

from __future__ import annotations

__all__ = ["SERVER_ID_FILE", "load_server_id", "read_server_id"]

import asyncio
import secrets
import string
from pathlib import Path

from pyspire_sdk.errors import ConfigError, ConfigIssue
from pyspire_sdk.files import write_private_file

SERVER_ID_FILE = "server-id"
_ID_ALPHABET = frozenset(string.ascii_lowercase + string.digits)


def read_server_id(data_dir: Path) -> str | None:
    """The ID kept in ``data_dir``, or ``None`` when none was made yet (for tools that must
    not make one, such as ``datastore copy``); :class:`~pyspire_sdk.errors.ConfigError` at
    ``data_dir`` for a file that is not an ID."""
    path = data_dir / SERVER_ID_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([ConfigIssue("data_dir", f"{path}: cannot read: {error}")]) from None
    if not text or len(text) > 64 or not set(text) <= _ID_ALPHABET:
        raise ConfigError(
            [ConfigIssue("data_dir", f"{path}: not a server ID (lower-case letters and digits)")]
        )
    return text


def _read_or_make(data_dir: Path) -> str:
    found = read_server_id(data_dir)
    if found is not None:
        return found
    server_id = secrets.token_hex(16)
    write_private_file(data_dir / SERVER_ID_FILE, f"{server_id}\n".encode("ascii"))
    return server_id


async def load_server_id(data_dir: Path) -> str:
    """This server's ID, made and written (mode 0600) at first start; raises
    :class:`~pyspire_sdk.errors.ConfigError` at ``data_dir`` for a file that is not an ID."""
    return await asyncio.to_thread(_read_or_make, data_dir)
