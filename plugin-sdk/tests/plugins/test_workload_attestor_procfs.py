"""Shared /proc reading for workload attestors, checked against the test process itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import pytest

from pyspire_sdk.errors import InvalidArgumentError, UnavailableError
from pyspire_sdk.procfs import (
    read_cgroups,
    read_exe_path,
    read_process_info,
    read_start_time,
)
from pyspire_sdk.testing.workload_attestor_contract import vanished_pid

# Resolved once at import, outside the event loop.
INTERPRETER = Path(sys.executable).resolve()

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

STATUS = """Name:\tweird name
Umask:\t0022
State:\tS (sleeping)
PPid:\t1
Uid:\t1000\t1001\t1002\t1003
Gid:\t2000\t2001\t2002\t2003
Groups:\t10 20 30
"""
# The command name holds a space and a ')' on purpose: only the last ')' ends it.
STAT = "4242 (we) ird) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0\n"


def _fake_proc(root: Path, pid: int = 4242, *, status: str = STATUS, stat: str = STAT) -> Path:
    directory = root / str(pid)
    directory.mkdir(parents=True)
    (directory / "status").write_text(status)
    (directory / "stat").write_text(stat)
    return root


async def test_own_process_info_matches_the_os() -> None:
    info = await read_process_info(os.getpid())

    assert info.pid == os.getpid()
    assert info.ppid == os.getppid()
    assert (info.uids.real, info.uids.effective) == (os.getuid(), os.geteuid())
    assert (info.gids.real, info.gids.effective) == (os.getgid(), os.getegid())
    assert set(info.supplementary_gids) == set(os.getgroups())
    assert info.name
    assert info.start_time > 0


async def test_start_time_is_stable_and_distinguishes_processes() -> None:
    info = await read_process_info(os.getpid())
    assert await read_start_time(os.getpid()) == info.start_time

    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()", stdin=asyncio.subprocess.PIPE
    )
    try:
        child_info = await read_process_info(child.pid)
        assert child_info.ppid == os.getpid()
        assert child_info.start_time >= info.start_time
        assert await read_exe_path(child.pid) == INTERPRETER
    finally:
        assert child.stdin is not None
        child.stdin.close()
        await child.wait()


async def test_own_exe_path_is_the_interpreter() -> None:
    assert await read_exe_path(os.getpid()) == INTERPRETER


async def test_own_cgroups_are_parsed() -> None:
    cgroups = await read_cgroups(os.getpid())
    assert cgroups
    for hierarchy, _controllers, path in cgroups:
        assert hierarchy.isdigit()
        assert path.startswith("/")


async def test_a_vanished_process_is_unavailable() -> None:
    pid = await vanished_pid()
    for read in (read_process_info, read_start_time, read_exe_path, read_cgroups):
        with pytest.raises(UnavailableError, match=f"process {pid}"):
            await read(pid)


@pytest.mark.parametrize("pid", [0, -5, True])
async def test_an_impossible_pid_is_invalid(pid: int) -> None:
    with pytest.raises(InvalidArgumentError, match="pid must be a positive integer"):
        await read_process_info(pid)


async def test_fake_proc_is_parsed(tmp_path: Path) -> None:
    info = await read_process_info(4242, proc_root=_fake_proc(tmp_path))

    assert info.name == "weird name"
    assert info.ppid == 1
    assert (info.uids.real, info.uids.effective, info.uids.saved, info.uids.filesystem) == (
        1000,
        1001,
        1002,
        1003,
    )
    assert info.gids.effective == 2001
    assert info.supplementary_gids == (10, 20, 30)
    assert info.start_time == 987654


@pytest.mark.parametrize(
    ("status", "stat", "message"),
    [
        (STATUS.replace("Uid:\t1000\t1001\t1002\t1003\n", ""), STAT, "no Uid field"),
        (STATUS.replace("1003", ""), STAT, "does not hold four ids"),
        (STATUS.replace("1003", "x"), STAT, "Uid is not numeric"),
        (STATUS.replace("Groups:\t10 20 30", "Groups:\tten"), STAT, "not numeric"),
        (STATUS, "4242 (short) S 1 2 3\n", "stat is malformed"),
        (STATUS, STAT.replace("987654", "soon"), "start time is not a number"),
        (STATUS, "no parenthesis here at all", "stat is malformed"),
    ],
)
async def test_malformed_proc_files_are_unavailable(
    tmp_path: Path, status: str, stat: str, message: str
) -> None:
    root = _fake_proc(tmp_path, status=status, stat=stat)
    with pytest.raises(UnavailableError, match=message):
        await read_process_info(4242, proc_root=root)


async def test_malformed_cgroup_line_is_unavailable(tmp_path: Path) -> None:
    root = _fake_proc(tmp_path)
    (root / "4242" / "cgroup").write_text("0::/ok\nbroken\n")
    with pytest.raises(UnavailableError, match="cgroup line 'broken' is malformed"):
        await read_cgroups(4242, proc_root=root)


async def test_cgroup_paths_may_hold_colons(tmp_path: Path) -> None:
    root = _fake_proc(tmp_path)
    (root / "4242" / "cgroup").write_text("12:cpu,cpuacct:/docker/abc:def\n0::/\n")
    assert await read_cgroups(4242, proc_root=root) == (
        ("12", "cpu,cpuacct", "/docker/abc:def"),
        ("0", "", "/"),
    )


async def test_a_missing_exe_link_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="does not exist or has no executable"):
        await read_exe_path(4242, proc_root=_fake_proc(tmp_path))


async def test_unreadable_status_is_unavailable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    root = _fake_proc(tmp_path)
    (root / "4242" / "status").chmod(0)
    with pytest.raises(UnavailableError, match="reading status is not permitted"):
        await read_process_info(4242, proc_root=root)


async def test_a_pid_reused_while_reading_is_unavailable(tmp_path: Path) -> None:
    # stat and status are FIFOs fed by a thread, in the order they are read: stat, status,
    # stat. Each open for writing waits for the reader to open that file, so the feeder keeps
    # step. The second stat names another process with the same pid, as if the process exited
    # and its pid was reused between the reads.
    directory = tmp_path / "4242"
    directory.mkdir()
    stat, status = directory / "stat", directory / "status"
    os.mkfifo(stat)
    os.mkfifo(status)
    feed_order = (
        (stat, STAT),
        (status, STATUS),
        (stat, STAT.replace("987654", "987999")),
    )

    def feed() -> None:
        for path, text in feed_order:
            with path.open("w") as writer:
                writer.write(text)

    feeder = asyncio.create_task(asyncio.to_thread(feed))
    try:
        with pytest.raises(UnavailableError, match="replaced by another process"):
            await asyncio.wait_for(read_process_info(4242, proc_root=tmp_path), timeout=10)
        await asyncio.wait_for(feeder, timeout=10)
    finally:
        if not feeder.done():
            # Unblock a feeder still waiting for a reader so the thread can end.
            for path in (stat, status):
                with contextlib.suppress(OSError):
                    os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
