"""Fixtures for the Entry, Debug and Health service tests: the services over the real server
context, and helpers that act as an admin or as an agent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_pb
from pyspire.proto.gen.codec import spire_api_types as pb
from pyspire.server.api.entry import EntryService
from pyspire.server.authorization import Caller, CallerKind
from pyspire.server.context import ServerContext
from pyspire.transport.calls import set_caller
from pyspire_sdk.spiffeid import SpiffeId

TD = "example.org"
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/one")
OTHER_AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/two")
SERVER = SpiffeId.parse("spiffe://example.org/spire/server")


def wire_id(spiffe_id: SpiffeId | str) -> pb.SPIFFEID:
    parsed = SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id
    return pb.SPIFFEID(trust_domain=parsed.trust_domain.name, path=parsed.path)


def wire_entry(
    spiffe_id: str,
    parent_id: SpiffeId | str = AGENT,
    selectors: Sequence[tuple[str, str]] = (("unix", "uid:1000"),),
    **fields: Any,
) -> pb.Entry:
    """A wire entry; ``spiffe_id`` is a path in example.org."""
    return pb.Entry(
        spiffe_id=wire_id(f"spiffe://{TD}{spiffe_id}"),
        parent_id=wire_id(parent_id),
        selectors=[pb.Selector(type=t, value=v) for t, v in selectors],
        **fields,
    )


@pytest.fixture
def entry_service(server_context: ServerContext) -> EntryService:
    return EntryService(server_context)


@pytest.fixture
def as_agent() -> Callable[[SpiffeId], None]:
    """Make the current task an agent caller with the given ID."""

    def become(agent_id: SpiffeId) -> None:
        set_caller(Caller(kinds=frozenset({CallerKind.AGENT}), spiffe_id=agent_id))

    return become


async def create_entries(service: EntryService, *entries: pb.Entry) -> list[pb.Entry]:
    """Create wire entries through the service; every one must succeed."""
    response = (
        await service.batch_create_entry(entry_pb.BatchCreateEntryRequest(entries=list(entries)))
    ).decode()
    for result in response.results:
        assert result.status.code == 0, result.status.message
    return [result.entry for result in response.results]
