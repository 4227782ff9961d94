"""Unix socket paths: only directories nobody else can write to, and proof after bind.

The tests run as root and play the other local user with uid 65534 (nobody): directories they
own, or that they may write to, must be refused before anything is bound there.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyspire.transport.unix import (
    SocketPathError,
    bind_unix_socket,
    prepare_socket_path,
    secure_socket_directory,
    verify_bound_socket,
)

OTHER_UID = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@pytest.fixture
def base() -> Iterator[Path]:
    """A short private directory under /tmp (socket paths are limited to 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="ps-unix-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def listening(path: Path, directory_mode: int = 0o700) -> socket.socket:
    return bind_unix_socket(path, directory_mode=directory_mode, socket_mode=0o770, backlog=8)


# -- the socket's own directory ----------------------------------------------------------------


@needs_root
def test_a_directory_another_user_made_first_is_refused(base: Path) -> None:
    """The reported attack: another user creates the directory (0777) before the daemon."""
    planted = base / "private"
    planted.mkdir()
    os.chown(planted, OTHER_UID, OTHER_UID)
    planted.chmod(0o777)
    with pytest.raises(SocketPathError, match=r"belongs to uid 65534, not to this process's user"):
        listening(planted / "api.sock")
    assert list(planted.iterdir()) == []
    assert mode_of(planted) == 0o777


@needs_root
def test_a_directory_of_another_user_is_refused_even_when_private(base: Path) -> None:
    planted = base / "private"
    planted.mkdir(mode=0o700)
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(SocketPathError, match="belongs to uid 65534"):
        prepare_socket_path(planted / "api.sock", directory_mode=0o700)


@pytest.mark.parametrize(
    ("directory_mode", "found_mode"),
    [(0o700, 0o777), (0o700, 0o755), (0o700, 0o750), (0o755, 0o775), (0o755, 0o757)],
)
def test_our_directory_granting_more_than_its_mode_is_refused_not_tightened(
    base: Path, directory_mode: int, found_mode: int
) -> None:
    loose = base / "sockets"
    loose.mkdir()
    loose.chmod(found_mode)
    with pytest.raises(SocketPathError, match=f"has mode {found_mode:04o}, more than the"):
        prepare_socket_path(loose / "api.sock", directory_mode=directory_mode)
    assert mode_of(loose) == found_mode


@pytest.mark.parametrize(("directory_mode", "found_mode"), [(0o700, 0o700), (0o755, 0o711)])
def test_our_directory_within_its_mode_is_used_as_it_is(
    base: Path, directory_mode: int, found_mode: int
) -> None:
    folder = base / "sockets"
    folder.mkdir()
    folder.chmod(found_mode)
    with listening(folder / "api.sock", directory_mode) as sock:
        assert sock.getsockname() == str(folder / "api.sock")
    assert mode_of(folder) == found_mode


def test_missing_directories_are_created_ours_with_exact_modes(base: Path) -> None:
    """Even under a umask that would narrow them: the Workload API directory must stay
    reachable by every workload."""
    path = base / "a" / "b" / "public" / "api.sock"
    previous = os.umask(0o077)
    try:
        with listening(path, 0o755):
            pass
    finally:
        os.umask(previous)
    assert mode_of(base / "a") == 0o755
    assert mode_of(base / "a" / "b") == 0o755
    assert mode_of(base / "a" / "b" / "public") == 0o755
    assert (base / "a" / "b" / "public").stat().st_uid == os.geteuid()
    assert mode_of(path) == 0o770


# -- the directories on the way --------------------------------------------------------------


@needs_root
def test_a_directory_on_the_way_owned_by_another_user_is_refused(base: Path) -> None:
    """Its owner could rename our directory away and put theirs in its place."""
    theirs = base / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    ours = theirs / "private"
    ours.mkdir(mode=0o700)
    with pytest.raises(SocketPathError, match=r"directory .*/theirs on the way .* uid 65534"):
        prepare_socket_path(ours / "api.sock", directory_mode=0o700)


def test_a_writable_directory_on_the_way_is_refused_unless_sticky(base: Path) -> None:
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SocketPathError, match=r"mode 0777: others may write to it and it is not"):
        prepare_socket_path(shared / "private" / "api.sock", directory_mode=0o700)
    assert not (shared / "private").exists()

    shared.chmod(0o1777)  # a /tmp of our own: others cannot move what we own in it
    with listening(shared / "private" / "api.sock"):
        pass
    assert mode_of(shared / "private") == 0o700


@needs_root
def test_a_sticky_directory_keeps_others_out_of_what_they_made_first(base: Path) -> None:
    """In a /tmp-like directory another user may take the name first: refused, not used."""
    shared = base / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    squatted = shared / "pyspire-agent"
    squatted.mkdir(mode=0o755)
    os.chown(squatted, OTHER_UID, OTHER_UID)
    with pytest.raises(SocketPathError, match=r"pyspire-agent on the way .* uid 65534"):
        prepare_socket_path(squatted / "public" / "api.sock", directory_mode=0o755)


@needs_root
def test_symbolic_links_on_the_way_must_be_ours_and_lead_somewhere_safe(base: Path) -> None:
    target = base / "real"
    target.mkdir(mode=0o700)
    link = base / "link"
    link.symlink_to(target)
    with listening(link / "api.sock") as sock:
        assert sock.getsockname() == str(link / "api.sock")
    assert (target / "api.sock").is_socket()

    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(SocketPathError, match=r"symbolic link .*/link on the way .* uid 65534"):
        prepare_socket_path(link / "api.sock", directory_mode=0o700)

    unsafe = base / "unsafe"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    (base / "to-unsafe").symlink_to(unsafe)
    with pytest.raises(SocketPathError, match=r"socket directory .*/unsafe has mode 0777"):
        prepare_socket_path(base / "to-unsafe" / "api.sock", directory_mode=0o700)


def test_a_relative_path_is_checked_from_the_root(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(base)
    secure_socket_directory(Path("run") / "private", directory_mode=0o700)
    assert mode_of(base / "run" / "private") == 0o700


def test_a_file_on_the_way_is_refused(base: Path) -> None:
    (base / "file").write_text("")
    with pytest.raises(SocketPathError, match="is not a directory"):
        prepare_socket_path(base / "file" / "api.sock", directory_mode=0o700)


# -- after bind ------------------------------------------------------------------------------


def test_bind_verifies_and_leaves_no_probe_behind(base: Path) -> None:
    path = base / "private" / "api.sock"
    with listening(path) as sock:
        assert mode_of(path) == 0o770
        assert not sock.getblocking()
        with pytest.raises(BlockingIOError):
            sock.accept()  # the probe connection was taken off the queue
        verify_bound_socket(path, sock)


_IMPOSTOR = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_socket_replaced_after_bind_is_detected(base: Path) -> None:
    """The path must lead to our listener: another process's socket in its place is refused."""
    path = base / "private" / "api.sock"
    with listening(path) as sock:
        path.unlink()
        impostor = subprocess.Popen(
            [sys.executable, "-c", _IMPOSTOR, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert impostor.stdout is not None
            assert impostor.stdout.readline().strip() == "ready"
            with pytest.raises(SocketPathError, match=f"leads to process {impostor.pid}"):
                verify_bound_socket(path, sock)
        finally:
            impostor.kill()
            impostor.wait()


@needs_root
def test_a_socket_file_of_another_user_is_detected(base: Path) -> None:
    path = base / "private" / "api.sock"
    with listening(path) as sock:
        os.chown(path, OTHER_UID, OTHER_UID)
        with pytest.raises(SocketPathError, match="was replaced after bind"):
            verify_bound_socket(path, sock)


def test_a_stale_socket_is_replaced_and_anything_else_refused(base: Path) -> None:
    path = base / "private" / "api.sock"
    (base / "private").mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as leftover:
        leftover.bind(str(path))
    with listening(path):
        pass
    path.unlink()
    path.mkdir()
    with pytest.raises(SocketPathError, match="exists and is not a socket"):
        listening(path)
    assert path.is_dir()


def test_too_long_a_path_is_refused(base: Path) -> None:
    with pytest.raises(SocketPathError, match="longer than 107 bytes"):
        prepare_socket_path(base / ("x" * 120), directory_mode=0o700)


def test_a_directory_that_cannot_be_made_is_reported_by_name() -> None:
    """The kernel refuses new directories in sysfs, even to root."""
    with pytest.raises(SocketPathError, match=r"cannot be prepared: .* \(/sys/pyspire-test\)"):
        prepare_socket_path(Path("/sys/pyspire-test/api.sock"), directory_mode=0o700)
