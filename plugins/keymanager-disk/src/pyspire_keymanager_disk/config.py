"""Settings of the ``disk`` key manager."""

from __future__ import annotations

__all__ = ["DEFAULT_FILE_NAME", "DiskKeyManagerConfig"]

from dataclasses import dataclass
from pathlib import Path

from pyspire_sdk.config import setting

DEFAULT_FILE_NAME = "keys.json"
"""The keys file's name inside the process's data directory when ``keys_path`` is not set."""


@dataclass(frozen=True, kw_only=True)
class DiskKeyManagerConfig:
    """Where the ``disk`` key manager keeps its keys."""

    keys_path: Path | None = setting(
        None,
        description=(
            "the JSON file holding the private keys (written with mode 0600; a missing "
            "directory is created with mode 0700); unset means keys.json in the data directory"
        ),
    )

    def resolve_keys_path(self, data_dir: Path) -> Path:
        """The absolute path of the keys file for a process whose data directory is
        ``data_dir``."""
        path = self.keys_path if self.keys_path is not None else data_dir / DEFAULT_FILE_NAME
        return path.absolute()
