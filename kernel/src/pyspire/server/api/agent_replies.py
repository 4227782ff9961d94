"""Each agent's last full SyncAuthorizedEntries answer, kept while nothing it depends on changed.

An agent with nothing new asks the same question every sync interval. Its full answer depends
only on the registry (its :attr:`~pyspire.registry.cache.RegistryCache.revision` changes with
every entry or node change), the output mask, and the clock through entry expiry (an expired
entry leaves the answer together with what was reached only through it, see
:meth:`~pyspire.registry.authorized.AuthorizedEntriesIndex.authorized_entries`). So the answer
is kept with the revision and mask it was made for and the earliest ``expires_at`` among its
entries, and sent again as it is until one of them moves. Sans-IO: the caller passes the time.

The cache holds at most ``max_agents`` answers (least recently used dropped); an answer holds
references to the shared entry encodings plus the assembled bytes.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_AGENTS", "AgentReplies"]

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.spiffeid import SpiffeId

DEFAULT_MAX_AGENTS = 16_384
"""How many agents' answers are kept at most."""

_Reply = TypeVar("_Reply")


@dataclass(frozen=True, slots=True)
class _Kept(Generic[_Reply]):
    revision: int
    fields: frozenset[str]
    valid_until: datetime | None
    reply: _Reply


class AgentReplies(Generic[_Reply]):
    """Answers by agent ID; see the module documentation. Not thread-safe (one event loop)."""

    def __init__(self, max_agents: int = DEFAULT_MAX_AGENTS) -> None:
        if max_agents < 1:
            raise InvalidArgumentError(f"max_agents {max_agents} must be at least 1")
        self._max_agents = max_agents
        self._kept: OrderedDict[SpiffeId, _Kept[_Reply]] = OrderedDict()
        self.hits = 0
        """Answers sent again (for tests and metrics)."""

    def __len__(self) -> int:
        return len(self._kept)

    def get(
        self, agent_id: SpiffeId, revision: int, fields: frozenset[str], now: datetime
    ) -> _Reply | None:
        """The kept answer if it still holds at ``revision``, for ``fields``, at ``now``."""
        kept = self._kept.get(agent_id)
        if kept is None or kept.revision != revision or kept.fields != fields:
            return None
        if kept.valid_until is not None and now > kept.valid_until:
            del self._kept[agent_id]
            return None
        self._kept.move_to_end(agent_id)
        self.hits += 1
        return kept.reply

    def keep(
        self,
        agent_id: SpiffeId,
        revision: int,
        fields: frozenset[str],
        entries: Sequence[RegistrationEntry],
        reply: _Reply,
    ) -> None:
        """Keep ``reply``, the full answer of ``entries`` made at ``revision`` for ``fields``."""
        expiries = [entry.expires_at for entry in entries if entry.expires_at is not None]
        self._kept[agent_id] = _Kept(revision, fields, min(expiries, default=None), reply)
        self._kept.move_to_end(agent_id)
        if len(self._kept) > self._max_agents:
            self._kept.popitem(last=False)
