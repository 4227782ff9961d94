"""The progress bar: drawn for a person at a terminal, after a short delay, never for a pipe."""

from __future__ import annotations

import io

from pyspire.cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_sees_the_bar_after_the_delay_and_a_clean_line_at_the_end() -> None:
    stream, ticks = Terminal(), Ticks()
    with Progress(stream, 1000, "entries", verb="creating", clock=ticks) as progress:
        progress.advance(100)
        assert stream.getvalue() == "", "quick work draws nothing"
        ticks.now += 1.0
        progress.advance(150)
        assert stream.getvalue() == (
            "\r" + "creating [#######.......................] 250/1,000 entries (25%, 1s)\x1b[K"
        )
        progress.advance(10)  # within the redraw interval: nothing new
        assert stream.getvalue().count("\r") == 1
        ticks.now += 0.2
        progress.advance(740)
        assert "1,000/1,000 entries (100%, 1s)" in stream.getvalue()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_a_pipe_or_file_sees_nothing() -> None:
    stream, ticks = io.StringIO(), Ticks()
    with Progress(stream, 10, "entries", clock=ticks) as progress:
        ticks.now += 5
        progress.advance(5)
    assert stream.getvalue() == ""
    assert progress.done == 5


def test_clear_makes_room_for_a_line_and_the_bar_comes_back() -> None:
    stream, ticks = Terminal(), Ticks()
    progress = Progress(stream, 10, "entries", clock=ticks, delay=0)
    progress.advance(1)
    progress.clear()
    stream.write("error: entry 2 failed\n")
    progress.advance(1)
    first, second = stream.getvalue().split("\n")
    assert first.endswith("1/10 entries (10%, 0s)\x1b[K\r\x1b[Kerror: entry 2 failed")
    assert second.startswith("\r[") and "2/10 entries" in second
