"""The ``unix`` workload attestor: selectors from a process's user, groups and binary."""

from pyspire_workloadattestor_unix.accounts import AccountDirectory, SystemAccounts
from pyspire_workloadattestor_unix.config import UnixAttestorConfig
from pyspire_workloadattestor_unix.plugin import UnixAttestor
from pyspire_workloadattestor_unix.process_table import ProcessTable, ProcfsProcessTable

__all__ = [
    "AccountDirectory",
    "ProcessTable",
    "ProcfsProcessTable",
    "SystemAccounts",
    "UnixAttestor",
    "UnixAttestorConfig",
]
