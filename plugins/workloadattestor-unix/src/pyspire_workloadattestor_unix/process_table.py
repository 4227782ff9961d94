"""Where the ``unix`` attestor gets its facts about a process: the seam and its procfs side.

:class:`ProcessTable` is the small interface the attestor reads through, so tests can put a
fake process table in its place (one whose pids get reused at an awkward moment). The real
one, :class:`ProcfsProcessTable`, reads ``/proc`` through :mod:`pyspire_sdk.procfs` and hashes
the executable itself.

Every method raises :class:`~pyspire_sdk.errors.UnavailableError` when the process is gone or
its files cannot be read, never returns a partial answer.

:meth:`ProcessTable.examine` is what the attestor calls on every Workload API call: it reads the
process's IDs, lets the caller derive what it needs from them (the user and group names) and
confirms the pid still names the same process, in one trip to a worker thread for the procfs
table instead of one trip per step.
"""

from __future__ import annotations

__all__ = ["ProcessTable", "ProcfsProcessTable", "hash_file"]

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from pyspire_sdk import procfs
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError

_CHUNK_SIZE = 1 << 20

_T = TypeVar("_T")


@runtime_checkable
class ProcessTable(Protocol):
    """Reads facts about live processes by pid; safe to call concurrently."""

    async def process_info(self, pid: int) -> procfs.ProcessInfo:
        """IDs, supplementary groups and start time of ``pid``, read consistently."""
        ...

    async def examine(
        self, pid: int, examine: Callable[[procfs.ProcessInfo], _T]
    ) -> tuple[procfs.ProcessInfo, _T]:
        """The facts :meth:`process_info` gives and what ``examine`` derived from them, once
        ``pid`` is known to have named the same process throughout.

        ``examine`` may block and is called off the event loop. The start time is read before
        the IDs and again after ``examine`` returned; when it changed, the pid was reused and
        :class:`~pyspire_sdk.procfs.ProcessReplacedError` is raised instead of an answer.
        """
        ...

    async def start_time(self, pid: int) -> int:
        """The start time of ``pid`` now, to tell whether the pid still names one process."""
        ...

    async def exe_path(self, pid: int) -> str:
        """The path of the binary ``pid`` runs, as the kernel reports it."""
        ...

    async def exe_sha256(self, pid: int, size_limit: int) -> str:
        """The lower-case hex SHA-256 of the binary ``pid`` runs.

        ``size_limit`` is in bytes; ``0`` means no limit. A binary larger than a positive limit
        raises :class:`~pyspire_sdk.errors.UnavailableError` and is not read.
        """
        ...


def hash_file(
    path: Path,
    *,
    size_limit: int,
    pid: int,
    cancelled: threading.Event | None = None,
) -> str:
    """The hex SHA-256 of the file at ``path``, read in chunks (call it in a worker thread).

    ``path`` is normally ``/proc/<pid>/exe``, which opens the executed file even when its
    name was since removed or replaced. The size is checked on the opened file before reading
    and again while reading, so a binary that grows past a positive ``size_limit`` is refused
    rather than hashed in part. Setting ``cancelled`` stops the read early; the result is then
    an :class:`~pyspire_sdk.errors.UnavailableError`.
    """
    try:
        with path.open("rb") as binary:
            if size_limit > 0:
                size = os.fstat(binary.fileno()).st_size
                if size > size_limit:
                    raise UnavailableError(
                        f"process {pid}: executable is {size} bytes, over the "
                        f"workload_size_limit of {size_limit} bytes"
                    )
            digest = hashlib.sha256()
            total = 0
            while chunk := binary.read(_CHUNK_SIZE):
                if cancelled is not None and cancelled.is_set():
                    raise UnavailableError(f"process {pid}: hashing the executable was cancelled")
                total += len(chunk)
                if 0 < size_limit < total:
                    raise UnavailableError(
                        f"process {pid}: executable grew over the workload_size_limit of "
                        f"{size_limit} bytes while being hashed"
                    )
                digest.update(chunk)
    except (FileNotFoundError, ProcessLookupError):
        raise UnavailableError(f"process {pid} does not exist or has no executable") from None
    except PermissionError:
        raise UnavailableError(f"process {pid}: reading the executable is not permitted") from None
    except IsADirectoryError:
        raise UnavailableError(f"process {pid}: the executable is not a regular file") from None
    except OSError as error:
        raise UnavailableError(
            f"process {pid}: reading the executable failed: {error.strerror or error}"
        ) from None
    return digest.hexdigest()


class ProcfsProcessTable:
    """The process table of the running kernel, read from ``proc_root`` (``/proc``).

    Pass another ``proc_root`` to read a host's procfs mounted elsewhere (an agent in a
    container with the host's ``/proc`` at ``/host/proc``) or a directory tree in a test.
    """

    def __init__(self, proc_root: Path = procfs.DEFAULT_PROC_ROOT) -> None:
        self._proc_root = proc_root

    @property
    def proc_root(self) -> Path:
        """Where procfs is read from."""
        return self._proc_root

    async def process_info(self, pid: int) -> procfs.ProcessInfo:
        return await procfs.read_process_info(pid, proc_root=self._proc_root)

    async def examine(
        self, pid: int, examine: Callable[[procfs.ProcessInfo], _T]
    ) -> tuple[procfs.ProcessInfo, _T]:
        """See :meth:`ProcessTable.examine`; the reads and ``examine`` share one worker
        thread (:func:`pyspire_sdk.procfs.examine_process`)."""
        return await procfs.examine_process(pid, examine, proc_root=self._proc_root)

    async def start_time(self, pid: int) -> int:
        return await procfs.read_start_time(pid, proc_root=self._proc_root)

    async def exe_path(self, pid: int) -> str:
        return str(await procfs.read_exe_path(pid, proc_root=self._proc_root))

    async def exe_sha256(self, pid: int, size_limit: int) -> str:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise InvalidArgumentError(f"pid must be a positive integer, got {pid!r}")
        cancelled = threading.Event()
        path = self._proc_root / str(pid) / "exe"
        try:
            return await asyncio.to_thread(
                hash_file, path, size_limit=size_limit, pid=pid, cancelled=cancelled
            )
        except asyncio.CancelledError:
            # The worker thread cannot be interrupted; tell it to stop at the next chunk so a
            # cancelled attestation does not keep reading a large binary.
            cancelled.set()
            raise
