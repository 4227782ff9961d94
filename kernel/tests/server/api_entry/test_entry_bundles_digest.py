"""SyncAuthorizedEntries offers the digest of the bundles the agent fetches next, in its
initial metadata; without the Bundle service's answers, or when they cannot be read, it sends
the entries without it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from pyspire.proto.bundle_digest import BUNDLES_DIGEST_HEADER, answer_digest, bundles_digest
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as entry_pb
from pyspire.proto.messages import EncodedMessage
from pyspire.server.api.bundle import encode_bundle
from pyspire.server.api.bundle_answers import BundleAnswers
from pyspire.server.api.entry import EntryService
from pyspire.server.context import ServerContext
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

from .conftest import AGENT, create_entries, wire_entry

OTHER = TrustDomain("other.org")


async def _first() -> AsyncIterator[entry_pb.SyncAuthorizedEntriesRequest]:
    yield entry_pb.SyncAuthorizedEntriesRequest()


async def _answer(service: EntryService) -> EncodedMessage[Any]:
    [reply] = [reply async for reply in service.sync_authorized_entries(_first())]
    return reply


async def _own(context: ServerContext) -> Bundle:
    bundle = await context.datastore.get_bundle(context.trust_domain)
    assert bundle is not None
    return bundle


async def test_the_digest_covers_our_bundle_and_the_federated_ones(
    server_context: ServerContext, as_agent: Callable[[SpiffeId], None]
) -> None:
    answers = BundleAnswers(server_context, encode_bundle)
    service = EntryService(server_context, bundles=answers)
    federated = Bundle(trust_domain=OTHER, sequence_number=3)
    await server_context.datastore.set_bundle(federated)
    await create_entries(service, wire_entry("/plain"))
    as_agent(AGENT)
    own = answer_digest(encode_bundle(await _own(server_context)))
    reply = await _answer(service)
    assert reply.metadata == {BUNDLES_DIGEST_HEADER: bundles_digest(own, [])}

    await create_entries(service, wire_entry("/federated", federates_with=[OTHER.name]))
    reply = await _answer(service)
    them = answer_digest(encode_bundle(federated))
    assert reply.metadata == {BUNDLES_DIGEST_HEADER: bundles_digest(own, [(OTHER.name, them)])}
    # The kept answer is sent again with the digest of the moment.
    assert (await _answer(service)).metadata == reply.metadata
    assert service.replies.hits == 1


async def test_no_digest_without_the_answers_or_when_they_cannot_be_read(
    server_context: ServerContext, as_agent: Callable[[SpiffeId], None]
) -> None:
    plain = EntryService(server_context)
    await create_entries(plain, wire_entry("/web"))
    as_agent(AGENT)
    reply = await _answer(plain)
    assert reply.metadata is None
    assert len(reply.decode().entries) == 1

    class Unreachable:
        def __getattr__(self, name: str) -> Any:
            return getattr(server_context.datastore, name)

        async def get_bundle(self, trust_domain: TrustDomain) -> Bundle | None:
            raise UnavailableError("datastore unreachable")

    broken = dataclasses.replace(server_context, datastore=Unreachable())  # type: ignore[arg-type]
    service = EntryService(server_context, bundles=BundleAnswers(broken, encode_bundle))
    reply = await _answer(service)
    assert reply.metadata is None
    assert len(reply.decode().entries) == 1
