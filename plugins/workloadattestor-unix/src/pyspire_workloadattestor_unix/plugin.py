"""The ``unix`` workload attestor and its registration.

Selector values, as SPIRE's ``unix`` attestor makes them (the host adds the type ``unix``):

- ``uid:<uid>`` and ``gid:<gid>``: the process's *effective* user and group IDs;
- ``user:<name>`` and ``group:<name>``: their names, when the system databases have one;
- ``supplementary_gid:<gid>`` and ``supplementary_group:<name>`` for each supplementary group;
- with ``discover_workload_path``: ``path:<path>`` of the binary the process runs and, unless
  ``workload_size_limit`` is negative, ``sha256:<hex>`` of that binary's content.

An ID without a name gives no name selector; that is a fact about the system, not an error.
Everything else the attestor cannot establish fails the attestation.

Names are looked up through a bounded cache
(:class:`~pyspire_workloadattestor_unix.accounts.CachedAccounts`) on the host's clock: an answer
is reused for :data:`~pyspire_workloadattestor_unix.accounts.NAME_CACHE_TTL` (five seconds), so
a renamed, added or removed account shows in selectors within that time.
"""

from __future__ import annotations

__all__ = ["UnixAttestor", "pyspire_workload_attestors"]

import structlog
from structlog.typing import FilteringBoundLogger

from pyspire_sdk.errors import InvalidArgumentError, PluginError, UnavailableError
from pyspire_sdk.plugin import HostServices, PluginRegistration, hookimpl
from pyspire_sdk.plugins.workload_attestor import WorkloadAttestor
from pyspire_sdk.procfs import ProcessInfo, ProcessReplacedError
from pyspire_workloadattestor_unix.accounts import (
    NAME_CACHE_TTL,
    AccountDirectory,
    CachedAccounts,
    SystemAccounts,
)
from pyspire_workloadattestor_unix.config import UnixAttestorConfig
from pyspire_workloadattestor_unix.process_table import ProcessTable, ProcfsProcessTable

PLUGIN_NAME = "unix"


def _identity_values(info: ProcessInfo, accounts: AccountDirectory) -> list[str]:
    """The user and group selector values of ``info``; blocking, run in a worker thread."""
    uid = info.uids.effective
    gid = info.gids.effective
    values = [f"uid:{uid}"]
    if (user := accounts.user_name(uid)) is not None:
        values.append(f"user:{user}")
    values.append(f"gid:{gid}")
    if (group := accounts.group_name(gid)) is not None:
        values.append(f"group:{group}")
    for supplementary in dict.fromkeys(info.supplementary_gids):
        values.append(f"supplementary_gid:{supplementary}")
        if (name := accounts.group_name(supplementary)) is not None:
            values.append(f"supplementary_group:{name}")
    return values


class UnixAttestor:
    """Attests a process by its Unix user and groups and, optionally, by its binary.

    Guarantees:

    - **No identity from another process.** The process's start time is read with its IDs
      and read again after every other fact (names, path, digest) was gathered; when it
      changed or the process is gone, the pid was reused or the workload exited, and
      :meth:`attest` raises :class:`~pyspire_sdk.errors.UnavailableError` instead of
      answering with a mix of two processes' facts.
    - **Nothing blocks the event loop.** ``/proc`` reads, user and group lookups (which may go
      to LDAP through NSS) and hashing run in worker threads; a cancelled attestation stops
      hashing at the next chunk. The IDs, the names and a start-time check share a single
      worker-thread trip
      (:meth:`~pyspire_workloadattestor_unix.process_table.ProcessTable.examine`); without
      ``discover_workload_path`` (the default) that trip is the whole attestation, which
      runs on every Workload API call.
    - **Names are recent.** Lookups go through a bounded cache on the host's clock, created
      by :meth:`configure`; a name (or its absence) is reused for at most
      :data:`~pyspire_workloadattestor_unix.accounts.NAME_CACHE_TTL`.
    - **Limits are kept like SPIRE keeps them.** A binary larger than a positive
      ``workload_size_limit`` fails the attestation rather than losing its ``sha256``
      selector quietly; a negative limit never hashes.

    ``process_table`` and ``accounts`` are seams for tests and for a procfs mounted elsewhere;
    the defaults read ``/proc`` and the system's user and group databases.
    """

    def __init__(
        self,
        process_table: ProcessTable | None = None,
        accounts: AccountDirectory | None = None,
    ) -> None:
        self._processes: ProcessTable = (
            process_table if process_table is not None else ProcfsProcessTable()
        )
        self._directory: AccountDirectory = accounts if accounts is not None else SystemAccounts()
        self._accounts: AccountDirectory = self._directory
        self._config: UnixAttestorConfig | None = None
        self._logger: FilteringBoundLogger = structlog.get_logger().bind(plugin=PLUGIN_NAME)

    @property
    def config(self) -> UnixAttestorConfig:
        """The configuration given to :meth:`configure`."""
        if self._config is None:
            raise PluginError("unix workload attestor is not configured")
        return self._config

    async def configure(self, config: UnixAttestorConfig, host: HostServices) -> None:
        """Keep ``config`` and start an empty name cache on the host's clock; nothing is
        opened, so configuration cannot fail."""
        self._accounts = CachedAccounts(self._directory, host.clock, ttl=NAME_CACHE_TTL)
        self._config = config
        self._logger = host.logger
        self._logger.info(
            "unix workload attestor configured",
            discover_workload_path=config.discover_workload_path,
            workload_size_limit=config.workload_size_limit,
        )

    async def close(self) -> None:
        """Nothing to release."""

    async def attest(self, pid: int) -> list[str]:
        """The selector values of process ``pid`` (without the ``unix`` type).

        Raises :class:`~pyspire_sdk.errors.InvalidArgumentError` for a pid that is not a
        positive integer and :class:`~pyspire_sdk.errors.UnavailableError` when the process
        does not exist, exits or is replaced while being attested, or a fact the
        configuration asks for (its path, its digest within the size limit) cannot be read.
        """
        config = self.config
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise InvalidArgumentError(f"pid must be a positive integer, got {pid!r}")

        accounts = self._accounts
        try:
            info, values = await self._processes.examine(
                pid, lambda examined: _identity_values(examined, accounts)
            )
        except ProcessReplacedError:
            raise self._replaced(pid) from None
        if config.discover_workload_path:
            values.append(f"path:{await self._processes.exe_path(pid)}")
            if config.hashes_binary:
                digest = await self._processes.exe_sha256(pid, config.workload_size_limit)
                values.append(f"sha256:{digest}")
            if await self._processes.start_time(pid) != info.start_time:
                raise self._replaced(pid)
        return values

    def _replaced(self, pid: int) -> UnavailableError:
        self._logger.warning("workload pid was reused during attestation", pid=pid)
        return UnavailableError(
            f"process {pid} was replaced by another process while being attested"
        )


@hookimpl
def pyspire_workload_attestors() -> list[PluginRegistration[UnixAttestorConfig, WorkloadAttestor]]:
    """Offer the ``unix`` workload attestor."""
    return [
        PluginRegistration(
            name=PLUGIN_NAME,
            config_type=UnixAttestorConfig,
            factory=UnixAttestor,
            description="selectors from the workload's user, groups and (optionally) binary",
        )
    ]
