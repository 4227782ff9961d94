"""The ``systemd`` workload attestor: selectors from the caller's systemd unit."""

from pyspire_workloadattestor_systemd.attestor import SystemdAttestor
from pyspire_workloadattestor_systemd.bus import SystemdBus, UnitInfo, system_bus_address

__all__ = ["SystemdAttestor", "SystemdBus", "UnitInfo", "system_bus_address"]
