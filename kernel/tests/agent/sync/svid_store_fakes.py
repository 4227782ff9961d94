"""An SVID store plugin that keeps what it is given in memory, and fails when told to."""

from __future__ import annotations

from typing import Any

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.svid_store import StoredSvid


class MemorySvidStore:
    """A real :class:`~pyspire_sdk.plugins.svid_store.SvidStore`: ``stored`` maps metadata to
    the SVID put there; ``calls`` lists every call as ``(operation, metadata)``, failed ones
    included. ``failure`` (when set) is raised by every call; metadata with a value starting
    with ``bad`` is refused as invalid."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, ...], StoredSvid] = {}
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.failure: Exception | None = None

    async def configure(self, config: Any, host: HostServices) -> None:
        del config, host

    async def close(self) -> None:
        return None

    def _check(self, operation: str, metadata: tuple[str, ...]) -> None:
        self.calls.append((operation, metadata))
        if self.failure is not None:
            raise self.failure
        for value in metadata:
            if value.startswith("bad"):
                raise InvalidArgumentError(f"metadata {value!r} is not understood")

    async def put_x509_svid(self, svid: StoredSvid) -> None:
        self._check("put", svid.metadata)
        self.stored[svid.metadata] = svid

    async def delete_x509_svid(self, metadata: tuple[str, ...]) -> None:
        self._check("delete", metadata)
        self.stored.pop(metadata, None)
