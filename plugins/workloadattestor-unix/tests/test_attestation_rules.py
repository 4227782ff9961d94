"""The attestor's rules on a fake process table: selectors, names, and the pid-reuse guard.

:class:`FakeProcessTable` is a small scripted world, not a mock: it holds processes by pid and
answers like the real table. A test can schedule pid reuse: after the table has answered a
given kind of read for a pid, that pid names another process (or none), as when the kernel
recycles a pid in the middle of an attestation.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal, TypeVar

import pytest
from pyspire_workloadattestor_unix import UnixAttestor, UnixAttestorConfig
from pyspire_workloadattestor_unix.accounts import NAME_CACHE_TTL
from pyspire_workloadattestor_unix.process_table import ProcessTable, hash_file
from structlog.testing import capture_logs

from pyspire_sdk.config import load_config
from pyspire_sdk.errors import InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.procfs import IdSet, ProcessInfo, ProcessReplacedError
from pyspire_sdk.testing import FakeClock

Read = Literal["process_info", "start_time", "exe_path", "exe_sha256"]
T = TypeVar("T")


def process_info(
    pid: int,
    *,
    uid: int = 1000,
    gid: int = 1000,
    groups: tuple[int, ...] = (),
    start_time: int = 4242,
    real_uid: int | None = None,
    real_gid: int | None = None,
) -> ProcessInfo:
    """A process whose effective, saved and filesystem IDs are ``uid``/``gid``."""
    return ProcessInfo(
        pid=pid,
        name="workload",
        ppid=1,
        uids=IdSet(uid if real_uid is None else real_uid, uid, uid, uid),
        gids=IdSet(gid if real_gid is None else real_gid, gid, gid, gid),
        supplementary_gids=groups,
        start_time=start_time,
    )


@dataclass(frozen=True)
class FakeProcess:
    info: ProcessInfo
    exe_path: str = "/usr/bin/workload"
    exe_file: Path | None = None


@dataclass
class FakeProcessTable:
    processes: dict[int, FakeProcess] = field(default_factory=dict)
    _successors: dict[tuple[Read, int], FakeProcess | None] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add(self, process: FakeProcess) -> None:
        self.processes[process.info.pid] = process

    def reuse_after(self, read: Read, pid: int, successor: FakeProcess | None) -> None:
        """Once ``read`` has been answered for ``pid``, ``pid`` names ``successor``
        (``None``: the process exited and the pid is free)."""
        self._successors[(read, pid)] = successor

    def _current(self, pid: int) -> FakeProcess:
        process = self.processes.get(pid)
        if process is None:
            raise UnavailableError(f"process {pid} does not exist")
        return process

    def _answered(self, read: Read, pid: int) -> None:
        key = (read, pid)
        if key in self._successors:
            successor = self._successors.pop(key)
            if successor is None:
                del self.processes[pid]
            else:
                self.processes[pid] = successor

    async def process_info(self, pid: int) -> ProcessInfo:
        info = self._current(pid).info
        self._answered("process_info", pid)
        return info

    async def examine(self, pid: int, examine: Callable[[ProcessInfo], T]) -> tuple[ProcessInfo, T]:
        """Like the procfs table: the IDs, ``examine`` in a worker thread, the start time."""
        self.calls.append("examine")
        info = await self.process_info(pid)
        result = await asyncio.to_thread(examine, info)
        if await self.start_time(pid) != info.start_time:
            raise ProcessReplacedError(f"process {pid} was replaced while being examined")
        return info, result

    async def start_time(self, pid: int) -> int:
        start_time = self._current(pid).info.start_time
        self._answered("start_time", pid)
        return start_time

    async def exe_path(self, pid: int) -> str:
        self.calls.append("exe_path")
        path = self._current(pid).exe_path
        self._answered("exe_path", pid)
        return path

    async def exe_sha256(self, pid: int, size_limit: int) -> str:
        exe_file = self._current(pid).exe_file
        if exe_file is None:
            raise UnavailableError(f"process {pid}: reading the executable is not permitted")
        digest = await asyncio.to_thread(hash_file, exe_file, size_limit=size_limit, pid=pid)
        self._answered("exe_sha256", pid)
        return digest


@dataclass
class FakeAccounts:
    """Names by ID; records which threads asked, to show lookups stay off the event loop."""

    users: dict[int, str] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)
    threads: set[int] = field(default_factory=set)

    def user_name(self, uid: int) -> str | None:
        self.threads.add(threading.get_ident())
        return self.users.get(uid)

    def group_name(self, gid: int) -> str | None:
        self.threads.add(threading.get_ident())
        return self.groups.get(gid)


PID = 4321


async def attestor_on(
    table: FakeProcessTable,
    host: HostServices,
    accounts: FakeAccounts | None = None,
    **settings: object,
) -> UnixAttestor:
    attestor = UnixAttestor(process_table=table, accounts=accounts or FakeAccounts())
    await attestor.configure(load_config(UnixAttestorConfig, settings, path="unix"), host)
    return attestor


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "workload"
    path.write_bytes(b"\x7fELF" + bytes(range(256)) * 64)
    return path


@pytest.fixture
def successor(tmp_path: Path) -> FakeProcess:
    """Another process that gets the pid when it is reused: root, started later."""
    shell = tmp_path / "sh"
    shell.write_bytes(b"#!another binary")
    return FakeProcess(
        process_info(PID, uid=0, gid=0, start_time=9999), exe_path="/bin/sh", exe_file=shell
    )


@pytest.fixture
def table(binary: Path) -> FakeProcessTable:
    table = FakeProcessTable()
    table.add(
        FakeProcess(
            process_info(PID, uid=1000, gid=100, groups=(27, 44, 27, 999), real_uid=0),
            exe_path="/usr/bin/workload",
            exe_file=binary,
        )
    )
    return table


ACCOUNTS = {"users": {1000: "alice"}, "groups": {100: "users", 27: "sudo", 44: "video"}}


# -- selectors ------------------------------------------------------------------------------------


def test_the_fake_table_is_a_process_table() -> None:
    assert isinstance(FakeProcessTable(), ProcessTable)


async def test_ids_names_and_the_reuse_check_take_one_examine_call(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    attestor = await attestor_on(table, host_services, FakeAccounts(**ACCOUNTS))  # type: ignore[arg-type]

    values = await attestor.attest(PID)

    assert "user:alice" in values
    assert table.calls == ["examine"]


async def test_selectors_use_effective_ids_and_known_names(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    attestor = await attestor_on(table, host_services, FakeAccounts(**ACCOUNTS))  # type: ignore[arg-type]

    assert await attestor.attest(PID) == [
        "uid:1000",
        "user:alice",
        "gid:100",
        "group:users",
        "supplementary_gid:27",
        "supplementary_group:sudo",
        "supplementary_gid:44",
        "supplementary_group:video",
        "supplementary_gid:999",
    ]


async def test_ids_without_names_give_no_name_selectors(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    attestor = await attestor_on(table, host_services, FakeAccounts())

    assert await attestor.attest(PID) == [
        "uid:1000",
        "gid:100",
        "supplementary_gid:27",
        "supplementary_gid:44",
        "supplementary_gid:999",
    ]


async def test_name_lookups_run_off_the_event_loop(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    accounts = FakeAccounts(**ACCOUNTS)  # type: ignore[arg-type]
    attestor = await attestor_on(table, host_services, accounts)

    await attestor.attest(PID)

    assert accounts.threads, "no name was looked up"
    assert threading.get_ident() not in accounts.threads


async def test_names_are_reused_until_the_cache_ttl_passes(
    table: FakeProcessTable, host_services: HostServices, fake_clock: FakeClock
) -> None:
    accounts = FakeAccounts(users={1000: "alice"}, groups={100: "users"})
    attestor = await attestor_on(table, host_services, accounts)
    assert "user:alice" in await attestor.attest(PID)

    accounts.users[1000] = "bob"
    accounts.groups.pop(100)
    await fake_clock.advance(NAME_CACHE_TTL - timedelta(milliseconds=1))
    still_cached = await attestor.attest(PID)
    await fake_clock.advance(timedelta(milliseconds=1))
    looked_up_again = await attestor.attest(PID)

    assert ("user:alice" in still_cached, "group:users" in still_cached) == (True, True)
    assert "user:bob" in looked_up_again
    assert not [value for value in looked_up_again if value.startswith(("user:a", "group:"))]


async def test_configuring_again_forgets_cached_names(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    accounts = FakeAccounts(users={1000: "alice"})
    attestor = await attestor_on(table, host_services, accounts)
    await attestor.attest(PID)
    accounts.users[1000] = "bob"

    await attestor.configure(UnixAttestorConfig(), host_services)

    assert "user:bob" in await attestor.attest(PID)


async def test_path_and_digest_when_discovering_the_workload_path(
    table: FakeProcessTable, binary: Path, host_services: HostServices
) -> None:
    attestor = await attestor_on(table, host_services, discover_workload_path=True)

    values = await attestor.attest(PID)

    assert "path:/usr/bin/workload" in values
    assert f"sha256:{sha256_of(binary)}" in values


async def test_negative_size_limit_gives_the_path_but_never_hashes(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    table.add(FakeProcess(process_info(PID), exe_path="/opt/app", exe_file=None))
    attestor = await attestor_on(
        table, host_services, discover_workload_path=True, workload_size_limit=-1
    )

    values = await attestor.attest(PID)

    assert "path:/opt/app" in values
    assert not [value for value in values if value.startswith("sha256:")]


async def test_unreadable_binary_fails_attestation(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    table.add(FakeProcess(process_info(PID), exe_file=None))
    attestor = await attestor_on(table, host_services, discover_workload_path=True)

    with pytest.raises(UnavailableError, match="not permitted"):
        await attestor.attest(PID)


async def test_size_limit_is_not_consulted_without_path_discovery(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    attestor = await attestor_on(table, host_services, workload_size_limit=1)

    values = await attestor.attest(PID)

    assert not [v for v in values if v.startswith(("path:", "sha256:"))]


# -- the pid-reuse guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("read", "discover"),
    [("process_info", False), ("process_info", True), ("exe_path", True), ("exe_sha256", True)],
)
async def test_pid_reused_during_attestation_fails(
    table: FakeProcessTable,
    successor: FakeProcess,
    host_services: HostServices,
    read: Read,
    discover: bool,
) -> None:
    table.reuse_after(read, PID, successor)
    attestor = await attestor_on(table, host_services, discover_workload_path=discover)

    with capture_logs() as logs, pytest.raises(UnavailableError, match="replaced"):
        await attestor.attest(PID)

    assert any(log["event"] == "workload pid was reused during attestation" for log in logs)
    # The successor itself is attested on its own facts.
    assert (await attestor.attest(PID))[:2] == ["uid:0", "gid:0"]


@pytest.mark.parametrize("read", ["process_info", "exe_path", "exe_sha256"])
async def test_process_exiting_during_attestation_fails(
    table: FakeProcessTable, host_services: HostServices, read: Read
) -> None:
    table.reuse_after(read, PID, None)
    attestor = await attestor_on(table, host_services, discover_workload_path=True)

    with pytest.raises(UnavailableError, match="does not exist"):
        await attestor.attest(PID)


async def test_same_start_time_after_reads_is_the_same_process(
    table: FakeProcessTable, host_services: HostServices
) -> None:
    # A successor with the same start time is indistinguishable by design: the guard compares
    # start times only, so a replacement that keeps it (nothing changes) must still answer.
    same = table.processes[PID]
    table.reuse_after("exe_path", PID, same)
    attestor = await attestor_on(table, host_services, discover_workload_path=True)

    assert "path:/usr/bin/workload" in await attestor.attest(PID)


# -- arguments and life cycle ---------------------------------------------------------------------


@pytest.mark.parametrize("pid", [0, -5, True, 1.5, "12"])
async def test_impossible_pids_are_invalid_arguments(
    table: FakeProcessTable, host_services: HostServices, pid: object
) -> None:
    attestor = await attestor_on(table, host_services)

    with pytest.raises(InvalidArgumentError, match="pid must be a positive integer"):
        await attestor.attest(pid)  # type: ignore[arg-type]


async def test_attest_before_configure_is_a_plugin_error(table: FakeProcessTable) -> None:
    attestor = UnixAttestor(process_table=table, accounts=FakeAccounts())

    with pytest.raises(PluginError, match="not configured"):
        await attestor.attest(PID)
