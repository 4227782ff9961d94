"""The procfs process table and the hashing it does, on real files: a procfs-shaped directory
tree, ``/dev/zero`` as a binary that never ends, cancellation of a running hash, and
:meth:`~pyspire_workloadattestor_unix.process_table.ProcessTable.examine` with a process
replaced while it runs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pyspire_workloadattestor_unix.process_table import (
    ProcessTable,
    ProcfsProcessTable,
    hash_file,
)

from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.procfs import ProcessInfo, ProcessReplacedError

PID = 777
STATUS = """Name:\tworkload
Umask:\t0022
State:\tS (sleeping)
PPid:\t1
Uid:\t0\t1000\t1000\t1000
Gid:\t0\t100\t100\t100
Groups:\t27 44
"""


def stat_line(start_time: int) -> str:
    fields = ["S", "1"] + ["0"] * 17 + [str(start_time)] + ["0"] * 20
    return f"{PID} (work load) " + " ".join(fields) + "\n"


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    """A directory shaped like ``/proc`` with one process whose exe links to a real file."""
    root = tmp_path / "proc"
    directory = root / str(PID)
    directory.mkdir(parents=True)
    (directory / "status").write_text(STATUS)
    (directory / "stat").write_text(stat_line(31337))
    binary = tmp_path / "bin" / "workload"
    binary.parent.mkdir()
    binary.write_bytes(os.urandom(3 * (1 << 20) + 17))
    (directory / "exe").symlink_to(binary)
    return root


def test_procfs_table_is_a_process_table() -> None:
    assert isinstance(ProcfsProcessTable(), ProcessTable)
    assert ProcfsProcessTable().proc_root == Path("/proc")


async def test_reads_ids_groups_and_start_time(proc_root: Path) -> None:
    table = ProcfsProcessTable(proc_root)

    info = await table.process_info(PID)

    assert (info.uids.real, info.uids.effective) == (0, 1000)
    assert (info.gids.real, info.gids.effective) == (0, 100)
    assert info.supplementary_gids == (27, 44)
    assert info.start_time == 31337
    assert await table.start_time(PID) == 31337


async def test_exe_path_and_digest_follow_the_exe_link(proc_root: Path) -> None:
    table = ProcfsProcessTable(proc_root)
    binary = (proc_root / str(PID) / "exe").resolve()

    assert await table.exe_path(PID) == str(binary)
    assert await table.exe_sha256(PID, 0) == hashlib.sha256(binary.read_bytes()).hexdigest()


async def test_missing_process_is_unavailable(proc_root: Path) -> None:
    table = ProcfsProcessTable(proc_root)

    for read in (table.process_info(4), table.start_time(4), table.exe_path(4)):
        with pytest.raises(UnavailableError, match="process 4 does not exist"):
            await read
    with pytest.raises(UnavailableError, match="process 4 does not exist"):
        await table.exe_sha256(4, 0)


async def test_binary_over_the_limit_is_refused_before_reading(proc_root: Path) -> None:
    table = ProcfsProcessTable(proc_root)
    size = (proc_root / str(PID) / "exe").stat().st_size

    with pytest.raises(UnavailableError, match=f"is {size} bytes, over the workload_size_limit"):
        await table.exe_sha256(PID, size - 1)
    assert len(await table.exe_sha256(PID, size)) == 64


async def test_binary_growing_past_the_limit_is_refused(proc_root: Path) -> None:
    # /dev/zero reports size 0 and never ends: a file that keeps growing while it is read.
    exe = proc_root / str(PID) / "exe"
    exe.unlink()
    exe.symlink_to("/dev/zero")
    table = ProcfsProcessTable(proc_root)

    with pytest.raises(UnavailableError, match="grew over the workload_size_limit"):
        await table.exe_sha256(PID, 5 * (1 << 20))


@pytest.mark.parametrize("pid", [0, -1, True, "self"])
async def test_digest_of_an_impossible_pid_is_an_invalid_argument(
    proc_root: Path, pid: object
) -> None:
    with pytest.raises(InvalidArgumentError, match="pid must be a positive integer"):
        await ProcfsProcessTable(proc_root).exe_sha256(pid, 0)  # type: ignore[arg-type]


def test_unreadable_binary_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="not a regular file"):
        hash_file(tmp_path, size_limit=0, pid=PID)


def test_hash_stops_when_cancelled() -> None:
    cancelled = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            hash_file(Path("/dev/zero"), size_limit=0, pid=PID, cancelled=cancelled)
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    cancelled.set()
    worker.join(timeout=10)

    assert not worker.is_alive(), "hashing an endless file did not stop when cancelled"
    assert len(outcome) == 1
    assert isinstance(outcome[0], UnavailableError)
    assert "cancelled" in str(outcome[0])


def open_descriptors_to(target: str) -> int:
    count = 0
    for entry in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(entry) == target:
                count += 1
        except OSError:
            continue
    return count


async def wait_until(condition: str, check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out waiting until {condition}")


async def test_cancelled_attestation_stops_its_hashing_thread(proc_root: Path) -> None:
    exe = proc_root / str(PID) / "exe"
    exe.unlink()
    exe.symlink_to("/dev/zero")
    table = ProcfsProcessTable(proc_root)
    before = open_descriptors_to("/dev/zero")

    task = asyncio.create_task(table.exe_sha256(PID, 0))
    await wait_until(
        "the hashing thread opened the binary", lambda: open_descriptors_to("/dev/zero") > before
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await wait_until(
        "the hashing thread closed the binary", lambda: open_descriptors_to("/dev/zero") == before
    )


# -- examine: the IDs, the caller's own work and the start-time check in one worker thread ------


async def test_examine_gives_the_ids_and_what_the_callback_derived(proc_root: Path) -> None:
    table = ProcfsProcessTable(proc_root)
    threads: list[int] = []

    def effective_ids(info: ProcessInfo) -> tuple[int, int]:
        threads.append(threading.get_ident())
        return info.uids.effective, info.gids.effective

    info, derived = await table.examine(PID, effective_ids)

    assert derived == (1000, 100)
    assert info.supplementary_gids == (27, 44)
    assert info.start_time == 31337
    assert threads and threading.get_ident() not in threads, "examine ran on the event loop"


async def test_examine_refuses_a_pid_reused_while_the_callback_ran(proc_root: Path) -> None:
    table = ProcfsProcessTable(proc_root)

    def replace_the_process(info: ProcessInfo) -> str:
        # The process exits and a new one gets its pid: stat now shows another start time.
        (proc_root / str(PID) / "stat").write_text(stat_line(info.start_time + 1))
        return "facts of the first process"

    with pytest.raises(ProcessReplacedError, match=f"process {PID} was replaced"):
        await table.examine(PID, replace_the_process)

    info, _ = await table.examine(PID, lambda info: None)
    assert info.start_time == 31338


async def test_examine_of_a_missing_process_is_unavailable(proc_root: Path) -> None:
    called: list[ProcessInfo] = []

    with pytest.raises(UnavailableError, match="process 4 does not exist"):
        await ProcfsProcessTable(proc_root).examine(4, called.append)

    assert called == []


async def test_examine_passes_the_callbacks_error_through(proc_root: Path) -> None:
    def fail(info: ProcessInfo) -> None:
        raise UnavailableError("names could not be looked up")

    with pytest.raises(UnavailableError, match="names could not be looked up"):
        await ProcfsProcessTable(proc_root).examine(PID, fail)


@pytest.mark.parametrize("pid", [0, -1, True])
async def test_examine_of_an_impossible_pid_is_an_invalid_argument(
    proc_root: Path, pid: int
) -> None:
    with pytest.raises(InvalidArgumentError, match="pid must be a positive integer"):
        await ProcfsProcessTable(proc_root).examine(pid, lambda info: None)


async def test_status_longer_than_one_read_is_read_whole(proc_root: Path) -> None:
    # Real status files fit in one read; a long one (many padding lines before Groups) must
    # still be read to its end rather than cut at the first read.
    padding = "".join(f"Padding{number}:\t{'x' * 64}\n" for number in range(400))
    status = STATUS.replace("Groups:\t27 44\n", padding + "Groups:\t27 44 1234\n")
    assert len(status.encode()) > 3 * 8192
    (proc_root / str(PID) / "status").write_text(status)

    info = await ProcfsProcessTable(proc_root).process_info(PID)

    assert info.supplementary_gids == (27, 44, 1234)
