"""Facts about a Linux process from ``/proc``, shared by workload attestors.

Workload attestors (unix, docker, systemd, k8s, ...) all begin with the same facts: the
process's user and group IDs, its parent, its executable and its cgroups. Reading them here
once gives every attestor the same two guarantees:

- **A vanished process is an error, never an empty answer.** When ``/proc/<pid>`` is gone or
  unreadable, the functions raise :class:`~pyspire_sdk.errors.UnavailableError`, so the host
  fails the Workload API call instead of handing out an identity based on missing facts.
- **PID reuse is detected.** :func:`read_process_info` reads the process's start time before
  and after the other files; if it changed, the PID now names another process and the read
  fails. Callers that read more files later can compare :attr:`ProcessInfo.start_time` with
  :func:`read_start_time` again.

All public functions are ``async`` and do their file work in a thread.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PROC_ROOT",
    "IdSet",
    "ProcessInfo",
    "read_cgroups",
    "read_exe_path",
    "read_process_info",
    "read_start_time",
]

import asyncio
from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.errors import InvalidArgumentError, UnavailableError

DEFAULT_PROC_ROOT = Path("/proc")
"""Where procfs is mounted; functions take ``proc_root`` so tests can point elsewhere."""


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
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
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
        raise UnavailableError(f"process {pid} was replaced by another process while being read")
    return _parse_status(status, pid, before)


async def read_process_info(pid: int, *, proc_root: Path = DEFAULT_PROC_ROOT) -> ProcessInfo:
    """Read the IDs, name, parent and start time of process ``pid``.

    Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` for a pid that is not a positive
    integer, and :class:`~pyspire_sdk.errors.UnavailableError` when the process does not exist,
    its files cannot be read or parsed, or the pid was reused while reading.
    """
    _check_pid(pid)
    return await asyncio.to_thread(_process_info_sync, pid, proc_root)


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


def _cgroups_sync(pid: int, proc_root: Path) -> tuple[tuple[str, str, str], ...]:
    text = _read_text(proc_root / str(pid) / "cgroup", pid)
    entries: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise UnavailableError(f"process {pid}: cgroup line {line!r} is malformed")
        entries.append((parts[0], parts[1], parts[2]))
    return tuple(entries)


async def read_cgroups(
    pid: int, *, proc_root: Path = DEFAULT_PROC_ROOT
) -> tuple[tuple[str, str, str], ...]:
    """The lines of ``/proc/<pid>/cgroup`` as ``(hierarchy id, controllers, path)`` triples.

    On a cgroup v2 host there is one line ``("0", "", "/path")``. Container attestors find the
    container ID in the paths. Raises like :func:`read_process_info`.
    """
    _check_pid(pid)
    return await asyncio.to_thread(_cgroups_sync, pid, proc_root)
