"""Facts about a Linux process from ``/proc``, shared by workload attestors.

Workload attestors (unix, docker, systemd, k8s, ...) all begin with the same facts: the
process's user and group IDs, its parent, its executable and its cgroups. Reading them here
once gives every attestor the same two guarantees:

- **A vanished process is an error, never an empty answer.** When ``/proc/<pid>`` is gone or
  unreadable, the functions raise :class:`~pyspire_sdk.errors.UnavailableError`, so the host
  fails the Workload API call instead of handing out an identity based on missing facts.
- **PID reuse is detected.** :func:`read_process_info` reads the process's start time before
  and after the other files; if it changed, the PID now names another process and the read
  fails (:class:`ProcessReplacedError`). Callers that read more files later can compare
  :attr:`ProcessInfo.start_time` with :func:`read_start_time` again, or gather everything they
  need inside :func:`examine_process`, which checks the start time after their own work.

All public functions are ``async`` and do their file work in a thread; :func:`examine_process`
does all of its work in a single one, since each trip to a worker thread costs about as much as
the reads themselves. The reads stay off the event loop even though they are small: ``proc_root``
may be any directory (a FIFO there blocks until written), and even on procfs, reading an exiting
process's ``status`` or ``stat`` may leave the reader releasing that process's memory.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PROC_ROOT",
    "IdSet",
    "ProcessInfo",
    "ProcessReplacedError",
    "examine_process",
    "read_cgroups",
    "read_exe_path",
    "read_process_info",
    "read_start_time",
]

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pyspire_sdk._cgroup_lines import CgroupLine, parse_cgroups
from pyspire_sdk.errors import InvalidArgumentError, UnavailableError

DEFAULT_PROC_ROOT = Path("/proc")
"""Where procfs is mounted; functions take ``proc_root`` so tests can point elsewhere."""

_T = TypeVar("_T")

_READ_SIZE = 8192
"""Bytes asked for per ``read``: ``status`` and ``stat`` fit in one, larger files loop."""


class ProcessReplacedError(UnavailableError):
    """By the end of a read the pid no longer named the process it named at the start.

    The process's start time changed between two reads of ``stat``: the process exited and the
    kernel gave its pid to a new one. Facts gathered in between may mix the two processes, so
    none of them are returned.
    """


@dataclass(frozen=True, slots=True)
class IdSet:
    """The four IDs Linux keeps per process for users (or groups)."""

    real: int
    effective: int
    saved: int
    filesystem: int


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What ``/proc/<pid>/status`` and ``/proc/<pid>/stat`` say about one process.

    ``start_time`` is the process's start in clock ticks since boot (field 22 of ``stat``); with
    ``pid`` it identifies the process uniquely until the next reboot.
    """

    pid: int
    name: str
    ppid: int
    uids: IdSet
    gids: IdSet
    supplementary_gids: tuple[int, ...]
    start_time: int


def _check_pid(pid: int) -> None:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise InvalidArgumentError(f"pid must be a positive integer, got {pid!r}")


def _read_text(path: Path, pid: int) -> str:
    # os.open/os.read rather than Path.read_text: procfs files are small and generated on read,
    # and the buffered text layer costs several times the system calls themselves.
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(descriptor, _READ_SIZE):
                chunks.append(chunk)
        finally:
            os.close(descriptor)
        return b"".join(chunks).decode("utf-8", errors="surrogateescape")
    except (FileNotFoundError, ProcessLookupError):
        raise UnavailableError(f"process {pid} does not exist") from None
    except PermissionError:
        raise UnavailableError(f"process {pid}: reading {path.name} is not permitted") from None
    except OSError as error:
        # ESRCH and friends: the process exited while the file was being read.
        raise UnavailableError(
            f"process {pid}: reading {path.name} failed: {error.strerror or error}"
        ) from None


def _parse_start_time(text: str, pid: int) -> int:
    # The command name (field 2) is in parentheses and may itself hold spaces and ')'; the
    # fields after the last ')' start with field 3 (state).
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 20:
        raise UnavailableError(f"process {pid}: stat is malformed")
    try:
        return int(fields[19])
    except ValueError:
        raise UnavailableError(f"process {pid}: stat start time is not a number") from None


def _start_time_sync(pid: int, proc_root: Path) -> int:
    return _parse_start_time(_read_text(proc_root / str(pid) / "stat", pid), pid)


def _parse_id_set(value: str, field: str, pid: int) -> IdSet:
    parts = value.split()
    if len(parts) != 4:
        raise UnavailableError(f"process {pid}: status field {field} does not hold four ids")
    try:
        real, effective, saved, filesystem = (int(part) for part in parts)
    except ValueError:
        raise UnavailableError(f"process {pid}: status field {field} is not numeric") from None
    return IdSet(real, effective, saved, filesystem)


def _parse_status(text: str, pid: int, start_time: int) -> ProcessInfo:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields[key] = value.strip()
    for required in ("Name", "PPid", "Uid", "Gid"):
        if required not in fields:
            raise UnavailableError(f"process {pid}: status has no {required} field")
    try:
        ppid = int(fields["PPid"])
        groups = tuple(int(group) for group in fields.get("Groups", "").split())
    except ValueError:
        raise UnavailableError(f"process {pid}: status PPid or Groups is not numeric") from None
    return ProcessInfo(
        pid=pid,
        name=fields["Name"],
        ppid=ppid,
        uids=_parse_id_set(fields["Uid"], "Uid", pid),
        gids=_parse_id_set(fields["Gid"], "Gid", pid),
        supplementary_gids=groups,
        start_time=start_time,
    )


def _process_info_sync(pid: int, proc_root: Path) -> ProcessInfo:
    directory = proc_root / str(pid)
    before = _start_time_sync(pid, proc_root)
    status = _read_text(directory / "status", pid)
    after = _start_time_sync(pid, proc_root)
    if before != after:
        raise ProcessReplacedError(
            f"process {pid} was replaced by another process while being read"
        )
    return _parse_status(status, pid, before)


def _examine_sync(
    pid: int, examine: Callable[[ProcessInfo], _T], proc_root: Path
) -> tuple[ProcessInfo, _T]:
    before = _start_time_sync(pid, proc_root)
    info = _parse_status(_read_text(proc_root / str(pid) / "status", pid), pid, before)
    result = examine(info)
    if _start_time_sync(pid, proc_root) != before:
        raise ProcessReplacedError(
            f"process {pid} was replaced by another process while being examined"
        )
    return info, result


async def read_process_info(pid: int, *, proc_root: Path = DEFAULT_PROC_ROOT) -> ProcessInfo:
    """Read the IDs, name, parent and start time of process ``pid``.

    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` for a pid that is not a positive
    integer, and :class:`~pyspire_sdk.errors.UnavailableError` when the process does not exist,
    its files cannot be read or parsed, or the pid was reused while reading.
    """
    _check_pid(pid)
    return await asyncio.to_thread(_process_info_sync, pid, proc_root)


async def examine_process(
    pid: int,
    examine: Callable[[ProcessInfo], _T],
    *,
    proc_root: Path = DEFAULT_PROC_ROOT,
) -> tuple[ProcessInfo, _T]:
    """Read process ``pid`` like :func:`read_process_info`, call ``examine`` with what was read,
    and return both once the pid is known to still name the same process.

    Everything runs in one worker thread, in this order: the start time, ``status``,
    ``examine(info)``, the start time again. ``examine`` may block (look names up, read more
    files of the process); it must not touch the event loop. When the two start times differ,
    the pid was reused at some point between them, so neither the IDs nor what ``examine``
    derived from the process are trusted: :class:`ProcessReplacedError` is raised instead.

    Raises like :func:`read_process_info`; whatever ``examine`` raises propagates unchanged.
    """
    _check_pid(pid)
    return await asyncio.to_thread(_examine_sync, pid, examine, proc_root)


async def read_start_time(pid: int, *, proc_root: Path = DEFAULT_PROC_ROOT) -> int:
    """The start time of process ``pid`` in clock ticks since boot.

    Compare it with :attr:`ProcessInfo.start_time` to tell whether ``pid`` still names the same
    process. Raises like :func:`read_process_info`.
    """
    _check_pid(pid)
    return await asyncio.to_thread(_start_time_sync, pid, proc_root)


def _exe_path_sync(pid: int, proc_root: Path) -> Path:
    link = proc_root / str(pid) / "exe"
    try:
        return Path(link.readlink())
    except (FileNotFoundError, ProcessLookupError):
        raise UnavailableError(f"process {pid} does not exist or has no executable") from None
    except PermissionError:
        raise UnavailableError(f"process {pid}: reading exe is not permitted") from None
    except OSError as error:
        raise UnavailableError(
            f"process {pid}: reading exe failed: {error.strerror or error}"
        ) from None


async def read_exe_path(pid: int, *, proc_root: Path = DEFAULT_PROC_ROOT) -> Path:
    """The path of the executable process ``pid`` runs, as the kernel reports it.

    The path names the file as it was at exec time: it may end in ``" (deleted)"`` when the
    binary was replaced since. To hash the binary, open ``<proc_root>/<pid>/exe`` itself, which
    refers to the executed file even then. Raises like :func:`read_process_info`; reading
    another user's process needs privileges the agent may lack, which raises
    :class:`~pyspire_sdk.errors.UnavailableError` as well.
    """
    _check_pid(pid)
    return await asyncio.to_thread(_exe_path_sync, pid, proc_root)


def _cgroups_sync(pid: int, proc_root: Path) -> tuple[CgroupLine, ...]:
    before = _start_time_sync(pid, proc_root)
    lines = parse_cgroups(_read_text(proc_root / str(pid) / "cgroup", pid), pid=pid)
    if _start_time_sync(pid, proc_root) != before:
        raise ProcessReplacedError(
            f"process {pid} was replaced by another process while its cgroups were read"
        )
    return lines


async def read_cgroups(pid: int, *, proc_root: Path = DEFAULT_PROC_ROOT) -> tuple[CgroupLine, ...]:
    """The lines of ``/proc/<pid>/cgroup`` as ``(hierarchy id, controllers, path)`` named
    tuples (:class:`pyspire_sdk.cgroups.CgroupLine`).

    On a cgroup v2 host there is one line ``("0", "", "/path")``. Container attestors find the
    container ID in the paths (:func:`pyspire_sdk.cgroups.find_container`). The start time is
    read before and after the file, so the lines are those of one process: a pid reused in
    between raises :class:`ProcessReplacedError`. Raises like :func:`read_process_info`.
    """
    _check_pid(pid)
    return await asyncio.to_thread(_cgroups_sync, pid, proc_root)
