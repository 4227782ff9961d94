"""Where the agent has put stored SVIDs, kept across restarts so that deletes are not lost.

An entry marked ``store_svid`` that is deleted while the agent is stopped would otherwise leave
its SVID in the SVID store for good: the restarted agent no longer knows the entry. So the agent
keeps the targets it has put SVIDs at (store name and metadata, no certificate and no key) in
``<data_dir>/`` :data:`FILE_NAME`, replaced atomically with mode 0600 after every change, and
hands them to :class:`~pyspire.agent.stored_svids.StoredSvidCache` on start: after the first
sync, those no entry addresses any more are deleted from their stores.

Reading never stops the agent: a missing file is "nothing stored", and a corrupt one is logged
and treated the same way (the SVIDs it named then stay in their stores until they expire).
"""

from __future__ import annotations

__all__ = ["FILE_NAME", "StoredTargetsFile"]

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import structlog

from pyspire.agent.storage import read_bounded, write_atomically
from pyspire.agent.stored_svids import StoreTarget
from pyspire_sdk.errors import InvalidArgumentError

FILE_NAME = "stored-svids.json"
FILE_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024
"""A file larger than this is refused as corrupt."""

_log = structlog.get_logger("pyspire.agent.stored_targets")


def _encode(targets: Sequence[StoreTarget]) -> bytes:
    document = {
        "version": FILE_VERSION,
        "targets": [
            {"store": target.store, "metadata": list(target.metadata)} for target in targets
        ],
    }
    return json.dumps(document, indent=1, sort_keys=True).encode()


def _decode(data: bytes) -> tuple[StoreTarget, ...]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(f"not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("version") != FILE_VERSION:
        raise InvalidArgumentError(f"not a version {FILE_VERSION} document")
    items = document.get("targets")
    if not isinstance(items, list):
        raise InvalidArgumentError("'targets' must be a list")
    targets: list[StoreTarget] = []
    for index, item in enumerate(items):
        store = item.get("store") if isinstance(item, dict) else None
        metadata = item.get("metadata") if isinstance(item, dict) else None
        if (
            not isinstance(store, str)
            or not store
            or not isinstance(metadata, list)
            or not all(isinstance(value, str) and value for value in metadata)
        ):
            raise InvalidArgumentError(
                f"targets[{index}] must have a non-empty 'store' and 'metadata' strings"
            )
        targets.append(StoreTarget(store, tuple(metadata)))
    return tuple(targets)


class StoredTargetsFile:
    """Reads and replaces :data:`FILE_NAME` in ``data_dir`` (off the event loop)."""

    def __init__(self, data_dir: Path) -> None:
        self._path = Path(data_dir) / FILE_NAME
        self._lock = asyncio.Lock()
        self._saved: tuple[StoreTarget, ...] | None = None

    @property
    def path(self) -> Path:
        """The file."""
        return self._path

    async def load(self) -> tuple[StoreTarget, ...]:
        """The targets kept by the last run; none when the file is missing or corrupt."""
        try:
            data = await asyncio.to_thread(read_bounded, self._path, MAX_FILE_BYTES)
            targets = () if data is None else _decode(data)
        except (OSError, InvalidArgumentError) as error:
            _log.warning(
                "cannot read the targets of stored svids; svids of entries deleted while the "
                "agent was stopped stay in their stores until they expire",
                path=str(self._path),
                error=str(error),
            )
            return ()
        self._saved = targets
        return targets

    async def save(self, targets: Sequence[StoreTarget]) -> None:
        """Replace the file with ``targets`` unless it holds them already; raises ``OSError``."""
        wanted = tuple(targets)
        async with self._lock:
            if wanted == self._saved:
                return
            await asyncio.to_thread(write_atomically, self._path, _encode(wanted))
            self._saved = wanted
