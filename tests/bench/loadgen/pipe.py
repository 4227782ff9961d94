"""The line protocol between the run and its worker processes: one JSON object a line.

The run writes commands to a worker's stdin (``{"do": "storm"}``, ...) and reads one answer a
command from its stdout; a worker writes nothing else there (logs go to its stderr, a file).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parents[1]


class WorkerError(Exception):
    """A worker exited, answered something unreadable or did not answer in time; the message
    holds the end of its log."""


def answer(message: dict[str, Any]) -> None:
    """Worker side: write one answer line."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class WorkerPipe:
    """Run side: a worker process started as ``python -m <module> <args>``, with its log in
    ``log_path``; :meth:`ask` sends a command and waits for its answer."""

    def __init__(self, name: str, module: str, args: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(BENCH), *filter(None, [environment.get("PYTHONPATH")])]
        )
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=environment,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        """:class:`WorkerError` with the log's end when the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise self._failure(f"exited with {code}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def tell(self, command: dict[str, Any]) -> None:
        """Send ``command`` without waiting for its answer."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise self._failure(f"cannot be told {command.get('do')!r}: {error}") from None

    def wait(self, timeout: float) -> dict[str, Any]:
        """The next answer; :class:`WorkerError` when none comes within ``timeout`` seconds."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise self._failure(f"did not answer within {timeout:g}s") from None
        if not line:
            raise self._failure(f"exited with {self.process.wait()}")
        try:
            message: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise self._failure(f"answered {line[:200]!r}") from None
        return message

    def ask(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``command`` and wait for its answer."""
        self.tell(command)
        return self.wait(timeout)

    def _failure(self, what: str) -> WorkerError:
        self._log.flush()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        return WorkerError(f"{self.name} {what}\n{tail}")

    def close(self, timeout: float = 15.0) -> None:
        """End the process (killed after ``timeout`` seconds) and close its log."""
        if self.process.poll() is None:
            try:
                if self.process.stdin is not None:
                    self.process.stdin.close()
                self.process.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, OSError):
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._log.close()
