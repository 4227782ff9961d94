"""A pyspire workload attestor that turns chosen environment variables into selectors.

Configured in the agent's TOML as ``[agent.plugins.workload_attestor.environ]``; see the
distribution's README for its settings.
"""

from pyspire_workloadattestor_environ.attestor import EnvironAttestor, EnvironConfig

__all__ = ["EnvironAttestor", "EnvironConfig"]
