"""Settings and rules shared by the server and agent configurations."""

from __future__ import annotations

__all__ = [
    "MAX_UNIX_SOCKET_PATH_BYTES",
    "KeyType",
    "check_log_settings",
    "check_positive",
    "check_socket_path",
]

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from pyspire.telemetry.logging import parse_log_format, parse_log_level
from pyspire_sdk.errors import ConfigIssue, InvalidArgumentError
from pyspire_sdk.plugins.key_manager import KeyType

MAX_UNIX_SOCKET_PATH_BYTES = 107
"""The longest path a Unix domain socket can bind on Linux (``sun_path`` is 108 bytes with NUL)."""


def check_log_settings(log_level: str, log_format: str) -> Iterator[ConfigIssue]:
    """Issues for a log level or format name the logging setup would refuse."""
    try:
        parse_log_level(log_level)
    except InvalidArgumentError:
        yield ConfigIssue(
            "log_level",
            f"expected one of DEBUG, INFO, WARN, WARNING, ERROR (any case), found {log_level!r}",
        )
    try:
        parse_log_format(log_format)
    except InvalidArgumentError:
        yield ConfigIssue(
            "log_format", f"expected one of 'text', 'json', 'auto' (any case), found {log_format!r}"
        )


def check_positive(key: str, value: timedelta | None) -> Iterator[ConfigIssue]:
    """An issue when a duration that is set is zero."""
    if value is not None and value <= timedelta(0):
        yield ConfigIssue(key, "must be greater than zero")


def check_socket_path(key: str, path: Path | None) -> Iterator[ConfigIssue]:
    """An issue when a Unix socket path is too long to bind."""
    if path is None:
        return
    size = len(os.fsencode(path))
    if size > MAX_UNIX_SOCKET_PATH_BYTES:
        yield ConfigIssue(
            key,
            f"path is {size} bytes, longer than the {MAX_UNIX_SOCKET_PATH_BYTES} a unix socket "
            "path may have",
        )
