"""systemd's D-Bus API, the two questions the attestor asks of it.

``org.freedesktop.systemd1.Manager.GetUnitByPID`` on ``/org/freedesktop/systemd1`` names the
object of the unit a process belongs to, and that object's ``org.freedesktop.systemd1.Unit``
properties ``Id`` and ``FragmentPath`` say which unit it is and which file defined it, as
SPIRE's attestor asks them.

One connection to the system bus is kept and shared by concurrent attestations (D-Bus matches
replies to calls by serial); it is made at the first question, so an agent that starts before
the bus is fine, and made again after it breaks. The bus is found as every D-Bus client finds
it: ``DBUS_SYSTEM_BUS_ADDRESS``, else the well-known socket. dbus-fast is imported when the
first connection is made.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_SYSTEM_BUS_ADDRESS",
    "MAX_PID",
    "SYSTEM_BUS_ADDRESS_VARIABLE",
    "SystemdBus",
    "UnitInfo",
    "system_bus_address",
]

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspire_sdk.errors import UnavailableError

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

SYSTEM_BUS_ADDRESS_VARIABLE = "DBUS_SYSTEM_BUS_ADDRESS"
"""The variable naming the system bus, honoured by every D-Bus library (the D-Bus
specification's)."""

DEFAULT_SYSTEM_BUS_ADDRESS = "unix:path=/var/run/dbus/system_bus_socket"
"""The system bus where the variable is unset (the D-Bus specification's)."""

SYSTEMD_BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"

MAX_PID = 2**32 - 1
"""GetUnitByPID takes a ``u`` (uint32)."""


def system_bus_address(environment: Mapping[str, str] | None = None) -> str:
    """Where the system bus is: ``DBUS_SYSTEM_BUS_ADDRESS`` when set and not empty, else the
    default socket."""
    values = os.environ if environment is None else environment
    return values.get(SYSTEM_BUS_ADDRESS_VARIABLE) or DEFAULT_SYSTEM_BUS_ADDRESS


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """What systemd says of a process's unit: its ``Id`` (``nginx.service``) and its
    ``FragmentPath`` (the unit file; empty for transient units such as session scopes)."""

    id: str
    fragment_path: str


class SystemdBus:
    """A client of systemd's manager on one bus address; :meth:`close` ends its connection."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._bus: MessageBus | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        """Disconnect; a later question connects again."""
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.disconnect()
            await _disconnected(bus)

    async def _connection(self) -> MessageBus:
        async with self._lock:
            bus = self._bus
            if bus is not None and bus.connected:
                return bus
            self._bus = None
            if bus is not None:
                bus.disconnect()
            from dbus_fast import BusType
            from dbus_fast.aio import MessageBus

            try:
                bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                raise UnavailableError(
                    f"cannot connect to the system bus at {self.address}: {_describe(error)}"
                ) from None
            self._bus = bus
            return bus

    async def _call(self, what: str, **message: Any) -> list[Any]:
        """The body of the reply to a method call on systemd; a D-Bus error reply or a broken
        connection is :class:`UnavailableError` naming ``what``."""
        from dbus_fast import Message, MessageType

        bus = await self._connection()
        try:
            reply = await bus.call(Message(destination=SYSTEMD_BUS_NAME, **message))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # The connection is in doubt: the next question makes a new one.
            if self._bus is bus:
                self._bus = None
            bus.disconnect()
            raise UnavailableError(f"{what}: {_describe(error)}") from None
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise UnavailableError(f"{what}: {reply.error_name}: {text}".rstrip(": "))
        return list(reply.body)

    async def _string_property(self, path: str, name: str) -> str:
        from dbus_fast import Variant

        body = await self._call(
            f"cannot read {name} of unit {path}",
            path=path,
            interface=PROPERTIES_INTERFACE,
            member="Get",
            signature="ss",
            body=[UNIT_INTERFACE, name],
        )
        value = body[0] if body else None
        if not isinstance(value, Variant) or value.signature != "s":
            shown = value.signature if isinstance(value, Variant) else repr(value)
            raise UnavailableError(f"{name} of unit {path} is not a string (type {shown})")
        text: str = value.value
        return text

    async def unit_of(self, pid: int) -> UnitInfo:
        """The unit of process ``pid`` (1 to :data:`MAX_PID`; systemd takes 0 for the caller);
        :class:`UnavailableError` when the bus or systemd cannot be asked, or systemd knows no
        unit of that process (it has gone)."""
        body = await self._call(
            f"cannot get the unit of pid {pid}",
            path=MANAGER_PATH,
            interface=MANAGER_INTERFACE,
            member="GetUnitByPID",
            signature="u",
            body=[pid],
        )
        path = body[0] if body else None
        if not isinstance(path, str) or not path.startswith("/"):
            raise UnavailableError(f"GetUnitByPID of pid {pid} answered no object path")
        return UnitInfo(
            id=await self._string_property(path, "Id"),
            fragment_path=await self._string_property(path, "FragmentPath"),
        )


async def _disconnected(bus: MessageBus) -> None:
    """Wait for dbus-fast to finish a disconnect it was asked for; a connection that broke
    earlier has nothing left to report."""
    try:
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: S110 - the failure was reported to the call that met it
        pass


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
