"""A private Docker Engine for tests: its own data, exec root and socket, no network set-up.

Tests of the ``docker`` attestor run against a real engine, started as root from Debian's
``docker.io`` package with ``--bridge=none --iptables=false --ip6tables=false`` so it touches
neither the host's network nor another engine's state. No image registry is reachable, so
:meth:`DockerDaemon.start` makes the one image the tests use with ``docker import`` from a
root file system holding a static busybox (Debian's ``busybox-static``). That root file system
has ``/lib`` and ``/lib64`` pointing into ``/usr``, so a container that bind-mounts the host's
``/usr`` read-only can run the host's dynamically linked programs.

:func:`engine_unavailable_reason` says why no engine can start here (not root, no ``dockerd``,
no busybox), for ``pytest.skip``.
"""

from __future__ import annotations

__all__ = ["TEST_IMAGE", "DockerDaemon", "engine_unavailable_reason"]

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

TEST_IMAGE = "pyspire-busybox:test"
"""The image :meth:`DockerDaemon.start` imports."""

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
COMMAND_TIMEOUT = 60.0
_BUSYBOX_APPLETS = ("sh", "sleep", "cat", "env", "true")


def _busybox() -> Path | None:
    found = shutil.which("busybox")
    return Path(found) if found else None


def engine_unavailable_reason() -> str | None:
    """Why a private engine cannot start on this machine, or ``None`` when it may."""
    if os.geteuid() != 0:
        return "a Docker Engine needs root to start"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian package docker.io)"
    if shutil.which("docker") is None:
        return "the docker command is not installed (Debian package docker.io)"
    if _busybox() is None:
        return "busybox is not installed (Debian package busybox-static)"
    return None


def _rootfs_tar(busybox: Path) -> bytes:
    """A tar of a root file system with busybox as /bin/busybox and a few applets."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for directory in ("bin", "tmp", "proc", "sys", "dev", "etc", "usr"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            archive.addfile(info)
        archive.add(str(busybox), arcname="bin/busybox")
        links = {f"bin/{applet}": "busybox" for applet in _BUSYBOX_APPLETS}
        links |= {"lib": "usr/lib", "lib64": "usr/lib64"}
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


class DockerDaemon:
    """``dockerd`` with everything under one temporary directory; a context manager.

    ``start`` raises :class:`RuntimeError` with the daemon's log when it does not come up or
    cannot run a container, having stopped it and removed its directory.
    """

    def __init__(self) -> None:
        # Short, so the socket path stays well under the 108-byte limit of sun_path.
        self.root = Path(tempfile.mkdtemp(prefix="pyspire-dockerd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The address as ``docker_socket_path`` takes it."""
        return f"unix://{self.socket}"

    @property
    def log(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> DockerDaemon:
        argv = [
            "dockerd",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"-H=unix://{self.socket}",
        ]
        with (self.root / "dockerd.log").open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                failure = f"dockerd exited {self._process.returncode}:\n{self.log}"
                self.stop()
                raise RuntimeError(failure)
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                self._import_image()
                self._probe()
                return self
            time.sleep(0.2)
        failure = f"dockerd did not answer within {START_TIMEOUT:g}s:\n{self.log}"
        self.stop()
        raise RuntimeError(failure)

    def _import_image(self) -> None:
        busybox = _busybox()
        if busybox is None:
            raise RuntimeError("busybox is not installed")
        self.docker("import", "-c", 'CMD ["/bin/sh"]', "-", TEST_IMAGE, stdin=_rootfs_tar(busybox))

    def _probe(self) -> None:
        """Run one container, so an engine that answers but cannot run containers here (no
        overlay file system, cgroups it cannot use) is reported at start, not as test
        failures."""
        probe = self.docker("run", "--rm", "--network", "none", TEST_IMAGE, "true", check=False)
        if probe.returncode != 0:
            self.stop()
            raise RuntimeError(f"the engine cannot run a container: {probe.stderr.strip()}")

    def docker(
        self, *argv: str, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker command against this engine; raises with its output on failure."""
        command = [shutil.which("docker") or "docker", "-H", self.endpoint, *argv]
        result = subprocess.run(  # noqa: S603 - the tests' own commands
            command,
            input=stdin.decode("latin-1") if stdin is not None else None,
            capture_output=True,
            text=True,
            encoding="latin-1",
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def run_detached(
        self,
        *,
        labels: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        options: Sequence[str] = (),
        command: Sequence[str] = ("sleep", "600"),
    ) -> str:
        """Start a container of :data:`TEST_IMAGE` without network; its ID."""
        argv = ["run", "-d", "--network", "none", *options]
        for key, value in (labels or {}).items():
            argv += ["--label", f"{key}={value}"]
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        return self.docker(*argv, TEST_IMAGE, *command).stdout.strip()

    def pid_of(self, container_id: str) -> int:
        """The host pid of the container's first process."""
        return int(self.docker("inspect", "-f", "{{.State.Pid}}", container_id).stdout)

    def image_id(self, image: str = TEST_IMAGE) -> str:
        return self.docker("image", "inspect", "-f", "{{.Id}}", image).stdout.strip()

    def remove(self, *container_ids: str) -> None:
        if container_ids:
            self.docker("rm", "-f", *container_ids, check=False)

    def stop(self) -> None:
        """Stop the engine (its containers go with it) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(subprocess.CalledProcessError):
                ids = self.docker("ps", "-aq", check=False).stdout.split()
                self.remove(*ids)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
