"""The agent's join token: given inline, or read from a file that keeps it off the command line.

A token passed as ``-joinToken`` is visible to every local user in ``/proc/<pid>/cmdline`` for as
long as the agent runs, and a token written into the configuration file is as readable as that
file. ``join_token_file`` (``-joinTokenFile``) names a file holding the token instead; the agent
reads it once, at start. Because the point is to keep the token from other users, a file that
others may read or write is refused rather than used (as ssh refuses a private key with loose
permissions): the error says which file and how to fix it. Group permissions are the operator's
choice and are left alone.
"""

from __future__ import annotations

__all__ = ["MAX_JOIN_TOKEN_FILE_BYTES", "read_join_token", "read_join_token_file"]

import os
import stat
from pathlib import Path

from pyspire.config.agent import AgentConfig
from pyspire_sdk.errors import ConfigError, ConfigIssue

MAX_JOIN_TOKEN_FILE_BYTES = 4096
"""The largest join token file accepted; a token is a few dozen bytes, so more is a mistake
(the wrong file)."""

_KEY = "join_token_file"


def _issue(message: str) -> ConfigError:
    return ConfigError([ConfigIssue(_KEY, message)])


def read_join_token_file(path: Path) -> str:
    """The token in ``path``, without surrounding whitespace (a trailing newline is normal).

    Raises :class:`ConfigError` naming ``join_token_file`` when the file cannot be read, is not
    a regular file, may be read or written by others, is too large, is not UTF-8 or holds no
    token. Blocking: call it in a thread from async code.
    """
    try:
        # Symbolic links are followed (mounted secrets are links); the mode checked is that of
        # the file the descriptor reads.
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise _issue(f"cannot read {str(path)!r}: {reason}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise _issue(f"{str(path)!r} is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            raise _issue(
                f"{str(path)!r} has mode {mode:04o}: other users may read or change the join "
                f"token; restrict it (chmod o-rw {path})"
            )
        data = os.read(descriptor, MAX_JOIN_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(descriptor)
    if len(data) > MAX_JOIN_TOKEN_FILE_BYTES:
        raise _issue(
            f"{str(path)!r} is larger than the {MAX_JOIN_TOKEN_FILE_BYTES} bytes a join token "
            "file may have"
        )
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _issue(f"{str(path)!r} is not UTF-8 text") from None
    if not token:
        raise _issue(f"{str(path)!r} is empty")
    if any(character.isspace() for character in token):
        raise _issue(f"{str(path)!r} holds more than one word; it must hold the token alone")
    return token


def read_join_token(config: AgentConfig) -> str | None:
    """The join token ``config`` gives: ``join_token`` itself, or the content of
    ``join_token_file`` (:func:`read_join_token_file`); None when it gives none. Blocking."""
    if config.join_token_file is not None:
        return read_join_token_file(config.join_token_file)
    return config.join_token
