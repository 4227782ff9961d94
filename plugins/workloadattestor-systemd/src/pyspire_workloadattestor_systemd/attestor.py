"""The ``systemd`` workload attestor.

Selector values, as SPIRE's ``systemd`` attestor makes them (the host adds the type
``systemd``):

- ``id:<unit>``: the ``Id`` of the unit the process belongs to (``nginx.service``);
- ``fragment_path:<path>``: the unit file the unit was loaded from
  (``/lib/systemd/system/nginx.service``), when it has one.

Every process of a systemd host belongs to a unit, so there is no "no opinion" answer: a
process systemd does not know (it has gone), a bus that cannot be reached or an answer that
is not what systemd publishes fails the attestation, as in SPIRE.
"""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "SystemdAttestor"]

import structlog
from structlog.typing import FilteringBoundLogger

from pyspire_sdk.errors import InvalidArgumentError, PluginError
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_workloadattestor_systemd.bus import MAX_PID, SystemdBus, UnitInfo, system_bus_address

PLUGIN_NAME = "systemd"


def selector_values(unit: UnitInfo) -> list[str]:
    """The values ``unit`` stands for; a unit without a file (a transient scope) gives no
    ``fragment_path`` value."""
    values = [f"id:{unit.id}"]
    if unit.fragment_path:
        values.append(f"fragment_path:{unit.fragment_path}")
    return values


class SystemdAttestor:
    """Attests processes by the systemd unit they run in.

    ``bus_address`` is a seam for a bus other than the system bus's (tests, a bus reached
    through another path); by default the address comes from the environment at configure
    time (:func:`~pyspire_workloadattestor_systemd.bus.system_bus_address`).
    """

    def __init__(self, bus_address: str | None = None) -> None:
        self._bus_address = bus_address
        self._bus: SystemdBus | None = None
        self._logger: FilteringBoundLogger = structlog.get_logger().bind(plugin=PLUGIN_NAME)

    async def configure(self, config: NoConfig, host: HostServices) -> None:
        """Choose the bus; nothing is dialled until a process is attested, so a bus that
        starts after the agent is fine."""
        bus = SystemdBus(self._bus_address or system_bus_address())
        previous, self._bus = self._bus, bus
        if previous is not None:
            await previous.close()
        self._logger = host.logger
        self._logger.info("systemd workload attestor configured", bus_address=bus.address)

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            await bus.close()

    async def attest(self, pid: int) -> list[str]:
        """The selector values of process ``pid`` (without the ``systemd`` type)."""
        bus = self._bus
        if bus is None:
            raise PluginError("systemd workload attestor is not configured")
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= MAX_PID:
            # GetUnitByPID takes a uint32, and 0 would name the caller: the agent itself.
            raise InvalidArgumentError(f"pid must be a positive 32-bit integer, got {pid!r}")
        return selector_values(await bus.unit_of(pid))
