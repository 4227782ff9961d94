"""Structured logging for the pyspire processes, built on structlog.

One pipeline renders everything the process logs: events from structlog loggers and records from
the standard :mod:`logging` module that libraries (grpclib, asyncpg, ...) use. Both pass through
the same processors, so they share a timestamp format, a level filter, the secret redaction and
one renderer:

- ``text``: human-readable lines (:class:`structlog.dev.ConsoleRenderer`), coloured only when the
  output is a terminal;
- ``json``: one JSON object per line, for log collectors;
- ``auto``: ``text`` on a terminal, ``json`` otherwise.

Redaction is defence in depth: code must never log a secret, but if a key named like one
(``token``, ``join_token``, ``password``, ``secret``, ``private_key``, ...) slips into an event,
its value is replaced by :data:`REDACTED` before anything is rendered.
"""

from __future__ import annotations

__all__ = [
    "REDACTED",
    "LogFormat",
    "configure_logging",
    "is_secret_key",
    "parse_log_format",
    "parse_log_level",
    "redact_secrets",
]

import enum
import functools
import itertools
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from pyspire_sdk.errors import InvalidArgumentError

REDACTED = "[redacted]"
"""What a secret-looking value is replaced with in every rendered event."""

LOG_FILE_MODE = 0o640
"""Permissions of a log file pyspire creates: owner read/write, group read, nothing for others."""

_LEVELS: Mapping[str, int] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

_SECRET_WORDS = frozenset(
    {
        "token",
        "tokens",
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "privatekey",
        "credential",
        "credentials",
    }
)
_SECRET_PAIRS = frozenset({("private", "key"), ("private", "keys"), ("api", "key")})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

_installed_handlers: list[logging.Handler] = []
"""Handlers configure_logging put on the root logger, removed when it runs again."""


class LogFormat(enum.StrEnum):
    """How log events are rendered."""

    TEXT = "text"
    JSON = "json"
    AUTO = "auto"


def parse_log_level(level: str | int) -> int:
    """The :mod:`logging` level of a name (DEBUG, INFO, WARN or WARNING, ERROR), any case.

    An ``int`` is taken as a :mod:`logging` level as is. Raises :class:`InvalidArgumentError`
    naming the accepted names otherwise.
    """
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str):
        found = _LEVELS.get(level.strip().upper())
        if found is not None:
            return found
    raise InvalidArgumentError(
        f"invalid log level {level!r}: expected one of DEBUG, INFO, WARN, WARNING, ERROR"
    )


def parse_log_format(fmt: str | LogFormat) -> LogFormat:
    """The :class:`LogFormat` of a name (text, json, auto), any case.

    Raises :class:`InvalidArgumentError` naming the accepted names otherwise.
    """
    if isinstance(fmt, LogFormat):
        return fmt
    if isinstance(fmt, str):
        try:
            return LogFormat(fmt.strip().lower())
        except ValueError:
            pass
    choices = ", ".join(member.value for member in LogFormat)
    raise InvalidArgumentError(f"invalid log format {fmt!r}: expected one of {choices}")


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True when ``key`` names something secret: a word of it is ``token``, ``password``,
    ``secret``, ``credential``, ... or it holds ``private key`` / ``api key``.

    Words are split at ``_``, ``-``, ``.`` and camelCase boundaries, so ``join_token``,
    ``clientSecret`` and ``private-key`` match while ``tokenizer`` or ``keys_path`` do not.
    """
    words = [word.lower() for word in _WORD.findall(key)]
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and is_secret_key(key) and item is not None
                else _redact(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact(item) for item in value)
    return value


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor replacing the value of every secret-named key with REDACTED.

    It looks into nested tables and arrays too (``config={"password": ...}``). ``None`` is kept
    because the absence of a secret is not a secret.
    """
    for key in list(event_dict):
        value = event_dict[key]
        if is_secret_key(key) and value is not None:
            event_dict[key] = REDACTED
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _redact(value)
    return event_dict


class _AppendFileHandler(logging.FileHandler):
    """A file handler that appends and creates its file with :data:`LOG_FILE_MODE`.

    The mode is applied explicitly after creation, so a permissive umask cannot widen it; an
    existing file keeps the permissions its owner gave it.
    """

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            descriptor = os.open(self.baseFilename, flags | os.O_CREAT | os.O_EXCL, LOG_FILE_MODE)
        except FileExistsError:
            descriptor = os.open(self.baseFilename, flags)
        else:
            os.fchmod(descriptor, LOG_FILE_MODE)
        return os.fdopen(descriptor, "a", encoding=self.encoding, errors=self.errors)


_ROUTINE_LIBRARY_RECORDS = frozenset(
    {
        ("grpclib.server", "Request was cancelled: %s"),
        ("aiohttp.server", "Error handling request from %s"),
    }
)
"""Library records that are routine here and only worth seeing at DEBUG: grpclib logs at INFO
every call whose client hung up before the end, and Workload API clients (py-spiffe, the CLI)
end their streams that way on every fetch; aiohttp logs at ERROR, with a traceback, every
malformed request it answers 400 (the telemetry endpoints' handlers log their own failures)."""


class _DemoteRoutineRecords(logging.Filter):
    """Log the records of :data:`_ROUTINE_LIBRARY_RECORDS` at DEBUG instead of their own
    level, so they pass only a DEBUG configuration."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and (record.name, record.msg) in _ROUTINE_LIBRARY_RECORDS:
            record.levelno = logging.DEBUG
            record.levelname = logging.getLevelName(logging.DEBUG)
            return self._level <= logging.DEBUG
        return True


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def configure_logging(
    level: str | int = "INFO",
    fmt: str | LogFormat = LogFormat.TEXT,
    file: str | os.PathLike[str] | None = None,
    *,
    stream: TextIO | None = None,
) -> LogFormat:
    """Route structlog and standard-library logging through one pipeline; return the format used.

    ``level`` and ``fmt`` are validated first (names in any case), then ``file`` is opened for
    appending (created with mode 0640 when missing); on any error an
    :class:`InvalidArgumentError` naming the setting is raised and the previous configuration is
    left untouched. Without ``file`` the output goes to ``stream`` (standard error by default).
    Calling it again replaces the previous pyspire configuration; handlers installed by others
    on the root logger are left alone.
    """
    numeric_level = parse_log_level(level)
    log_format = parse_log_format(fmt)
    handler, terminal = _open_handler(file, stream)
    if log_format is LogFormat.AUTO:
        log_format = LogFormat.TEXT if terminal else LogFormat.JSON
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_renderer(log_format, terminal),
            ],
        )
    )
    handler.setLevel(numeric_level)
    handler.addFilter(_DemoteRoutineRecords(numeric_level))
    _install(handler, numeric_level)
    structlog.configure(
        processors=[*_SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        # Loggers are looked up on each use so that a later configure_logging call (a reload,
        # a test) applies to loggers that were created before it.
        cache_logger_on_first_use=False,
    )
    return log_format


_SHARED_PROCESSORS: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    redact_secrets,
]
"""What every record goes through, from structlog or the standard library alike."""


def _open_handler(
    file: str | os.PathLike[str] | None, stream: TextIO | None
) -> tuple[logging.Handler, bool]:
    """The handler writing to ``file`` (appended to) or ``stream``, and whether it is a
    terminal; InvalidArgumentError naming ``log_file`` when the file cannot be opened."""
    if file is None:
        output = stream if stream is not None else sys.stderr
        return logging.StreamHandler(output), _is_terminal(output)
    path = Path(file)
    try:
        return _AppendFileHandler(path, mode="a", encoding="utf-8"), False
    except OSError as error:
        reason = error.strerror or str(error)
        reason = reason[:1].lower() + reason[1:]
        raise InvalidArgumentError(f"log_file: cannot open {str(path)!r}: {reason}") from None


def _renderer(log_format: LogFormat, terminal: bool) -> list[Processor]:
    if log_format is LogFormat.JSON:
        return [
            structlog.processors.dict_tracebacks,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.JSONRenderer(),
        ]
    return [structlog.dev.ConsoleRenderer(colors=terminal)]


def _install(handler: logging.Handler, level: int) -> None:
    """Make ``handler`` the root logger's pyspire handler, replacing the previous one only."""
    root = logging.getLogger()
    while _installed_handlers:
        previous = _installed_handlers.pop()
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    _installed_handlers.append(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
