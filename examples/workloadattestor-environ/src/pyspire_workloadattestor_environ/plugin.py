"""The entry point pyspire loads: it registers the ``environ`` workload attestor."""

from __future__ import annotations

__all__ = ["pyspire_workload_attestors"]

from pyspire_sdk.plugin import PluginRegistration, hookimpl
from pyspire_workloadattestor_environ.attestor import EnvironAttestor, EnvironConfig

PLUGIN_NAME = "environ"


@hookimpl
def pyspire_workload_attestors() -> list[PluginRegistration[EnvironConfig, EnvironAttestor]]:
    """The one workload attestor this distribution provides."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=EnvironConfig,
            factory=EnvironAttestor,
            description="selectors from chosen environment variables of the workload process",
        )
    ]
