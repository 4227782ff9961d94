"""A progress bar on standard error for long CLI work, drawn only for a person at a terminal.

``entry create -data`` with a hundred thousand entries runs for minutes; without a sign of life
an operator cannot tell progress from a hang. :class:`Progress` redraws one line on standard
error (``\\r``, no newline) at most every ``interval`` seconds, and only once the work has run
for ``delay`` seconds, so quick commands print nothing extra. When standard error is not a
terminal (a pipe, a file, a CI log) it draws nothing at all: scripts see exactly the output they
saw before. Standard output, where results go, is never touched.
"""

from __future__ import annotations

__all__ = ["Progress"]

import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_WIDTH = 30
"""Characters of the bar itself."""

_DEFAULT_DELAY = 0.5
"""Seconds of work before the bar first shows, so quick commands print nothing extra."""


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


class Progress:
    """``done`` of ``total`` ``noun`` (plural), drawn on ``stream`` when it is a terminal.

    Use as a context manager: the line is cleared at the end, so the bar never mixes with
    what the command prints on standard error afterwards. Call :meth:`clear` before writing a
    line to the same stream meanwhile; the next :meth:`advance` draws the bar again.
    """

    def __init__(
        self,
        stream: TextIO,
        total: int,
        noun: str,
        *,
        verb: str = "",
        delay: float | None = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool | None = None,
    ) -> None:
        self._stream = stream
        self.total = max(total, 0)
        self.done = 0
        self._noun = noun
        self._verb = verb
        self._delay = _DEFAULT_DELAY if delay is None else delay
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._drawn_at: float | None = None
        self.enabled = _is_terminal(stream) if enabled is None else enabled

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.clear()

    def advance(self, count: int) -> None:
        """Count ``count`` more items done; redraw when it is time to."""
        self.done = min(self.total, self.done + count) if self.total else self.done + count
        if not self.enabled:
            return
        now = self._clock()
        if now - self._started < self._delay:
            return
        if self._drawn_at is not None and now - self._drawn_at < self._interval:
            return
        self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The text of the bar as it would be drawn now."""
        elapsed = (self._clock() if now is None else now) - self._started
        fraction = self.done / self.total if self.total else 0.0
        filled = int(fraction * _WIDTH)
        bar = "#" * filled + "." * (_WIDTH - filled)
        prefix = f"{self._verb} " if self._verb else ""
        return (
            f"{prefix}[{bar}] {self.done:,}/{self.total:,} {self._noun} "
            f"({fraction:.0%}, {elapsed:.0f}s)"
        )

    def _draw(self, now: float) -> None:
        self._stream.write("\r" + self.line(now) + "\x1b[K")
        self._stream.flush()
        self._drawn_at = now

    def clear(self) -> None:
        """Clear the bar's line if one is drawn."""
        if self._drawn_at is not None:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn_at = None
