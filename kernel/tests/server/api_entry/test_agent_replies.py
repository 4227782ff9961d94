"""Each agent's kept full SyncAuthorizedEntries answer: when it is sent again, when not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pyspire.proto.entries import ENTRY_FIELDS
from pyspire.server.api.agent_replies import AgentReplies
from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.spiffeid import SpiffeId

NOW = datetime(2030, 1, 1, tzinfo=UTC)
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x/a")
OTHER = SpiffeId.parse("spiffe://example.org/spire/agent/x/b")


def entry(expires_at: datetime | None) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse("spiffe://example.org/w"),
        parent_id=AGENT,
        selectors=(),
        expires_at=expires_at,
    )


def test_kept_until_revision_mask_or_earliest_expiry_moves() -> None:
    replies: AgentReplies[bytes] = AgentReplies()
    soon = NOW + timedelta(minutes=1)
    replies.keep(AGENT, 7, ENTRY_FIELDS, [entry(None), entry(soon)], b"answer")
    assert replies.get(AGENT, 7, ENTRY_FIELDS, NOW) == b"answer"
    assert replies.get(AGENT, 7, ENTRY_FIELDS, soon) == b"answer"
    assert replies.get(AGENT, 8, ENTRY_FIELDS, NOW) is None
    assert replies.get(AGENT, 7, frozenset({"hint"}), NOW) is None
    assert replies.get(OTHER, 7, ENTRY_FIELDS, NOW) is None
    assert replies.get(AGENT, 7, ENTRY_FIELDS, soon + timedelta(seconds=1)) is None
    assert len(replies) == 0
    assert replies.hits == 2


def test_the_least_recently_used_answer_goes_first() -> None:
    replies: AgentReplies[bytes] = AgentReplies(max_agents=1)
    replies.keep(AGENT, 1, ENTRY_FIELDS, [], b"a")
    replies.keep(OTHER, 1, ENTRY_FIELDS, [], b"b")
    assert replies.get(AGENT, 1, ENTRY_FIELDS, NOW) is None
    assert replies.get(OTHER, 1, ENTRY_FIELDS, NOW) == b"b"
    with pytest.raises(InvalidArgumentError, match="max_agents"):
        AgentReplies(max_agents=0)
