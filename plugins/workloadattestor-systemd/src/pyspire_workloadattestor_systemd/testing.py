"""A private D-Bus daemon and a fake systemd on it, for tests where no system bus exists.

:class:`PrivateBus` runs ``dbus-daemon`` (Debian's ``dbus`` package) on a socket of its own,
with a bus configuration that activates no service, so nothing on the host answers for a
name the test does not own. :class:`FakeSystemd` owns ``org.freedesktop.systemd1`` there
and publishes what the attestor reads as systemd publishes it: the manager at
``/org/freedesktop/systemd1`` with ``org.freedesktop.systemd1.Manager.GetUnitByPID``
(``NoUnitForPID`` for a process it does not know), and one object per unit at
``/org/freedesktop/systemd1/unit/<escaped id>`` with the ``Id``, ``Description`` and
``FragmentPath`` properties of ``org.freedesktop.systemd1.Unit``::

    with PrivateBus() as bus:
        async with FakeSystemd(bus.address) as systemd:
            systemd.add_unit("web.service", "/etc/systemd/system/web.service", pids=[pid])
            attestor = SystemdAttestor(bus_address=bus.address)
"""

from __future__ import annotations

__all__ = [
    "NO_UNIT_FOR_PID",
    "FakeSystemd",
    "PrivateBus",
    "dbus_unavailable_reason",
    "unit_object_path",
]

import contextlib
import shutil
import string
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from dbus_fast import BusType, PropertyAccess
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt32
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from pyspire_workloadattestor_systemd.bus import (
    MANAGER_INTERFACE,
    MANAGER_PATH,
    SYSTEMD_BUS_NAME,
    UNIT_INTERFACE,
)

NO_UNIT_FOR_PID = "org.freedesktop.systemd1.NoUnitForPID"
"""The error systemd answers GetUnitByPID with for a process in no loaded unit."""

_UNIT_PATH_PREFIX = MANAGER_PATH + "/unit/"
_LABEL_CHARACTERS = frozenset(string.ascii_letters + string.digits)
_START_TIMEOUT = 10.0

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def dbus_unavailable_reason() -> str | None:
    """Why no private bus can run here, or ``None`` when ``dbus-daemon`` is installed."""
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is not installed (Debian's dbus package)"
    return None


def unit_object_path(unit_id: str) -> str:
    """The object path systemd gives a unit: its name with every character but ASCII letters
    and digits (and a leading digit) written ``_xx`` in hex, as systemd's bus label escaping
    does (``nginx.service`` is ``/org/freedesktop/systemd1/unit/nginx_2eservice``)."""
    if not unit_id:
        return _UNIT_PATH_PREFIX + "_"
    escaped = []
    for index, character in enumerate(unit_id.encode()):
        text = chr(character)
        if text in _LABEL_CHARACTERS and not (index == 0 and text.isdigit()):
            escaped.append(text)
        else:
            escaped.append(f"_{character:02x}")
    return _UNIT_PATH_PREFIX + "".join(escaped)


class PrivateBus:
    """A ``dbus-daemon`` on a unix socket in a private directory, until :meth:`stop`."""

    def __init__(self) -> None:
        self.address = ""
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> PrivateBus:
        """Start the daemon and learn its address; :class:`RuntimeError` saying why it did
        not start."""
        reason = dbus_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        directory = self._directory or tempfile.TemporaryDirectory(prefix="pyspire-dbus-")
        self._directory = directory
        config = Path(directory.name) / "bus.conf"
        socket = Path(directory.name) / "bus"
        log = Path(directory.name) / "bus.log"
        config.write_text(_CONFIG.format(socket=socket), encoding="utf-8")
        with log.open("a", encoding="utf-8") as errors:
            process = subprocess.Popen(  # noqa: S603 - fixed arguments
                [  # noqa: S607 - dbus-daemon from the PATH, as its package installs it
                    "dbus-daemon",
                    f"--config-file={config}",
                    "--nofork",
                    "--nopidfile",
                    "--print-address",
                ],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        if not address:
            process.kill()
            process.communicate(timeout=_START_TIMEOUT)
            reason = log.read_text(encoding="utf-8").strip()
            raise RuntimeError(f"dbus-daemon did not start: {reason}")
        self._process = process
        self.address = address
        return self

    def stop(self) -> None:
        """Stop the daemon; every connection to it breaks. :meth:`start` serves the same
        address again."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.communicate(timeout=_START_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()

    def close(self) -> None:
        """Stop the daemon and remove its directory."""
        self.stop()
        directory, self._directory = self._directory, None
        if directory is not None:
            directory.cleanup()

    def __enter__(self) -> PrivateBus:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Unit(ServiceInterface):
    """``org.freedesktop.systemd1.Unit``, the properties the attestor reads and one more."""

    def __init__(self, unit_id: str, fragment_path: str) -> None:
        super().__init__(UNIT_INTERFACE)
        self._id = unit_id
        self._fragment_path = fragment_path

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> DBusStr:  # noqa: N802 - systemd's name
        return self._id

    @dbus_property(access=PropertyAccess.READ)
    def Description(self) -> DBusStr:  # noqa: N802 - systemd's name
        return f"fake unit {self._id}"

    @dbus_property(access=PropertyAccess.READ)
    def FragmentPath(self) -> DBusStr:  # noqa: N802 - systemd's name
        return self._fragment_path


class _Manager(ServiceInterface):
    """``org.freedesktop.systemd1.Manager``'s GetUnitByPID over a table of pids."""

    def __init__(self) -> None:
        super().__init__(MANAGER_INTERFACE)
        self.units_by_pid: dict[int, str] = {}
        self.calls = 0

    @dbus_method()
    def GetUnitByPID(self, pid: DBusUInt32) -> DBusObjectPath:  # noqa: N802 - systemd's name
        self.calls += 1
        unit_id = self.units_by_pid.get(pid)
        if unit_id is None:
            raise DBusError(NO_UNIT_FOR_PID, f"PID {pid} does not belong to any loaded unit.")
        return unit_object_path(unit_id)


class FakeSystemd:
    """``org.freedesktop.systemd1`` on the bus at ``address``, knowing the units it is told
    of; ``calls`` counts the GetUnitByPID calls it answered."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._manager = _Manager()
        self._bus: MessageBus | None = None

    @property
    def calls(self) -> int:
        return self._manager.calls

    async def start(self) -> FakeSystemd:
        """Connect, publish the manager and every unit added, and own the name."""
        bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        self._bus = bus
        bus.export(MANAGER_PATH, self._manager)
        await bus.request_name(SYSTEMD_BUS_NAME)
        return self

    async def stop(self) -> None:
        """Leave the bus; the name has no owner any more."""
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.disconnect()
            with contextlib.suppress(EOFError, OSError):  # the daemon went first
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> FakeSystemd:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def add_unit(self, unit_id: str, fragment_path: str = "", pids: Iterable[int] = ()) -> str:
        """Publish unit ``unit_id`` (on a started fake), with ``pids`` in it; its object
        path."""
        return self.add_interface(unit_id, _Unit(unit_id, fragment_path), pids)

    def add_interface(self, unit_id: str, interface: ServiceInterface, pids: Iterable[int]) -> str:
        """Publish ``interface`` as the object of unit ``unit_id``, for units whose
        properties a test shapes itself; its object path."""
        if self._bus is None:
            raise RuntimeError("start the fake systemd before adding units")
        path = unit_object_path(unit_id)
        self._bus.export(path, interface)
        for pid in pids:
            self._manager.units_by_pid[pid] = unit_id
        return path
