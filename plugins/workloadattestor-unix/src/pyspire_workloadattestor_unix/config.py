"""Settings of the ``unix`` workload attestor, with SPIRE's names and defaults."""

from __future__ import annotations

__all__ = ["NO_SIZE_LIMIT", "UnixAttestorConfig"]

from dataclasses import dataclass

from pyspire_sdk.config import setting

NO_SIZE_LIMIT = 0
"""The ``workload_size_limit`` that hashes binaries of any size."""


@dataclass(frozen=True, kw_only=True)
class UnixAttestorConfig:
    """What the ``unix`` workload attestor looks at beyond the process's user and groups."""

    discover_workload_path: bool = setting(
        False,
        description=(
            "read /proc/<pid>/exe to add the path and sha256 selectors; the agent then needs "
            "permission to read the workload's exe link (root, or the workload's user), and "
            "attestation fails when it cannot"
        ),
    )
    workload_size_limit: int = setting(
        NO_SIZE_LIMIT,
        description=(
            "the largest workload binary, in bytes, hashed for the sha256 selector; a larger "
            "binary fails attestation; 0 means no limit and a negative value never hashes"
        ),
    )

    @property
    def hashes_binary(self) -> bool:
        """Whether attestation adds the ``sha256`` selector."""
        return self.discover_workload_path and self.workload_size_limit >= 0
