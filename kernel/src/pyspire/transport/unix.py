"""Unix sockets a daemon can trust: safe directories, stale sockets, and proof after bind.

Whoever can write to the directory holding a daemon's socket can put their own socket in its
place and answer the daemon's clients (the admin CLI, workloads) in its stead. So, the way
OpenSSH checks the files it trusts, the path is walked from ``/``:

- every directory on the way must belong to root or to us and be writable by no one else,
  unless it is sticky (``/tmp``): others cannot rename or remove what we own in a sticky
  directory; a symbolic link on the way must belong to root or to us, and its target is walked
  the same way;
- the socket's own directory must belong to us and grant no more than the mode we would create
  it with (0700 for an admin socket, 0755 for the Workload API);
- missing directories are created, ours, with that mode (0755 on the way);
- an unsafe directory is refused with the reason, never tightened or taken over.

After bind the path must still lead to our listening socket: a socket file we own, reached by a
probe connection whose peer is this process. Blocking functions: call them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from pyspire.transport.peer import socket_credentials
from pyspire_sdk.errors import PyspireError

MAX_SOCKET_PATH_BYTES = 107
"""The longest path ``bind`` takes for a unix socket on Linux (``sun_path`` less its NUL)."""

PASSAGE_DIRECTORY_MODE = 0o755
"""Mode of missing directories created on the way to a socket's own directory."""

ADMIN_DIRECTORY_MODE = 0o700
"""Mode of the directory holding an admin socket (the server's, the agent's): only the
daemon's user may reach the socket."""

ADMIN_SOCKET_MODE = 0o770
"""Mode of an admin socket itself, as SPIRE sets it; its directory keeps everyone else out."""

_MAX_SYMLINKS = 40
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
_PROBE_TIMEOUT = 2.0


class SocketPathError(PyspireError):
    """A socket path cannot be used; the message names the path and why."""


def _owner_is_trusted(info: os.stat_result) -> bool:
    return info.st_uid in (0, os.geteuid())


def _check_passage(path: Path, info: os.stat_result) -> None:
    """A directory on the way to the socket's own: root's or ours, and writable by no one else
    unless it is sticky."""
    if not _owner_is_trusted(info):
        raise SocketPathError(
            f"directory {path} on the way to the socket belongs to uid {info.st_uid}, "
            "neither root nor this process's user: its owner could replace what is below"
        )
    if info.st_mode & _OTHERS_WRITE and not info.st_mode & stat.S_ISVTX:
        raise SocketPathError(
            f"directory {path} on the way to the socket has mode "
            f"{stat.S_IMODE(info.st_mode):04o}: others may write to it and it is not sticky, "
            "so they could replace what is below"
        )


def _check_own_directory(path: Path, info: os.stat_result, directory_mode: int) -> None:
    """The socket's own directory: ours, granting no more than ``directory_mode``."""
    if info.st_uid != os.geteuid():
        raise SocketPathError(
            f"socket directory {path} belongs to uid {info.st_uid}, not to this process's "
            f"user (uid {os.geteuid()}): its owner could replace the socket"
        )
    granted = stat.S_IMODE(info.st_mode) & 0o777
    if granted & ~directory_mode:
        raise SocketPathError(
            f"socket directory {path} has mode {granted:04o}, more than the "
            f"{directory_mode:04o} it may have: others could replace the socket; remove the "
            "directory or restrict its mode"
        )


def _make_directory(path: Path, mode: int) -> os.stat_result:
    """Create ``path`` with exactly ``mode`` (the umask must not make it narrower either: the
    Workload API directory has to stay reachable by every workload)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return os.lstat(path)
    os.chmod(path, mode)
    return os.lstat(path)


def secure_socket_directory(directory: Path, *, directory_mode: int) -> None:
    """Walk to ``directory`` from ``/``, creating what is missing and refusing any directory or
    link that someone other than root or us could replace (see the module docstring)."""
    pending = list(directory.absolute().parts[1:])
    current = Path("/")
    _check_passage(current, os.lstat(current))
    links = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        candidate = current / name
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            info = _make_directory(
                candidate, directory_mode if not pending else PASSAGE_DIRECTORY_MODE
            )
        if stat.S_ISLNK(info.st_mode):
            if not _owner_is_trusted(info):
                raise SocketPathError(
                    f"symbolic link {candidate} on the way to the socket belongs to uid "
                    f"{info.st_uid}, neither root nor this process's user"
                )
            links += 1
            if links > _MAX_SYMLINKS:
                raise SocketPathError(f"too many symbolic links on the way to {directory}")
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path("/")
            pending[0:0] = [part for part in target.parts if part != "/"]
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise SocketPathError(f"{candidate} on the way to the socket is not a directory")
        if pending:
            _check_passage(candidate, info)
        current = candidate
    _check_own_directory(current, os.lstat(current), directory_mode)


def prepare_socket_path(path: Path, *, directory_mode: int) -> None:
    """Make the socket's directory safe (:func:`secure_socket_directory`) and remove a stale
    socket left by an earlier run. Anything else at ``path`` (a regular file, a directory) is
    refused rather than deleted."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(f"socket path {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes")
    path = path.absolute()
    try:
        secure_socket_directory(path.parent, directory_mode=directory_mode)
        try:
            existing = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(existing.st_mode):
            raise SocketPathError(f"socket path {path} exists and is not a socket")
        path.unlink()
    except SocketPathError:
        raise
    except OSError as error:
        raise SocketPathError(
            f"socket path {path} cannot be prepared: {error.strerror or error}"
            + (f" ({error.filename})" if error.filename else "")
        ) from None


def _check_socket_file(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise SocketPathError(f"socket path {path} disappeared after bind") from None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise SocketPathError(
            f"socket path {path} was replaced after bind: it is no longer a socket of this "
            f"process's user (uid {info.st_uid}, mode {info.st_mode:o})"
        )


def verify_bound_socket(path: Path, listener: socket.socket) -> None:
    """Prove that ``path`` leads to ``listener`` (listening, non-blocking): the file is a socket
    we own, and a probe connection reaches this process and waits in ``listener``'s queue."""
    _check_socket_file(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_PROBE_TIMEOUT)
        try:
            probe.connect(os.fspath(path))
            listener_pid = socket_credentials(probe).pid
        except OSError as error:
            raise SocketPathError(
                f"socket path {path} cannot be reached after bind: {error.strerror or error}"
            ) from None
        if listener_pid != os.getpid():
            raise SocketPathError(
                f"socket path {path} was replaced after bind: it leads to process "
                f"{listener_pid}, not to this one"
            )
        try:
            accepted, _ = listener.accept()
        except BlockingIOError:
            raise SocketPathError(
                f"socket path {path} was replaced after bind: a connection to it did not "
                "reach the socket this process bound"
            ) from None
        accepted.close()


def bind_unix_socket(
    path: Path, *, directory_mode: int, socket_mode: int, backlog: int
) -> socket.socket:
    """A listening, non-blocking unix socket at ``path`` with ``socket_mode``, in a directory
    that is safe (:func:`prepare_socket_path`), verified to be what ``path`` leads to."""
    prepare_socket_path(path, directory_mode=directory_mode)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            listener.bind(os.fspath(path))
        except OSError as error:
            raise SocketPathError(
                f"socket path {path} cannot be bound: {error.strerror or error}"
            ) from None
        _check_socket_file(path)
        # bind honours the umask, not our intent.
        os.chmod(path, socket_mode)
        listener.listen(backlog)
        listener.setblocking(False)
        verify_bound_socket(path, listener)
    except BaseException:
        listener.close()
        raise
    return listener


def remove_socket(path: Path) -> None:
    """Remove the socket at ``path`` when the listener closes (nothing if it is gone)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
