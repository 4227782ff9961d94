"""The module pyspire loads through the entry point: it registers the ``systemd`` attestor.

Registration imports no D-Bus library: dbus-fast is loaded when the first process is
attested.
"""

from __future__ import annotations

__all__ = ["pyspire_workload_attestors"]

from typing import Any

from pyspire_sdk.plugin import NoConfig, PluginRegistration, hookimpl
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor


@hookimpl
def pyspire_workload_attestors() -> list[PluginRegistration[Any, WorkloadAttestor]]:
    from pyspire_workloadattestor_systemd.attestor import PLUGIN_NAME, SystemdAttestor

    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=NoConfig,
            factory=SystemdAttestor,
            description="the systemd unit of the caller, asked of systemd over D-Bus",
        )
    ]
