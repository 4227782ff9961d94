"""Values repeated by many entries are held once: the index's memory per agent, measured."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime

from pyspire.registry.authorized import AuthorizedEntriesIndex
from pyspire.registry.shared import SharedValues
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

TD = "example.org"
AGENTS = 300
ENTRIES_PER_AGENT = 20
BYTES_PER_AGENT = 16_000
"""What the index may hold per agent of 20 entries: 12.8 KB with repeated values shared,
22.4 KB when every entry keeps the objects it was read with."""


def read_entry(agent: int, number: int) -> RegistrationEntry:
    """An entry as a datastore read of that one entry gives it: every object its own."""
    return RegistrationEntry(
        spiffe_id=SpiffeId.parse(f"spiffe://{TD}/load/agent-{agent}/workload-{number}"),
        parent_id=SpiffeId.parse(f"spiffe://{TD}/spire/agent/join_token/token-{agent:08d}"),
        selectors=(Selector("unix", f"uid:{1000 + number}"),),
        id=f"{agent:08d}-0000-4000-8000-{number:012d}",
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_an_index_of_many_agents_holds_each_repeated_value_once() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        index = AuthorizedEntriesIndex(TrustDomain(TD))
        for agent in range(AGENTS):
            for number in range(ENTRIES_PER_AGENT):
                index.upsert_entry(read_entry(agent, number))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / AGENTS <= BYTES_PER_AGENT, f"{held / AGENTS:.0f} bytes per agent"


def test_entries_keep_their_values_and_share_them() -> None:
    index = AuthorizedEntriesIndex(TrustDomain(TD))
    given = [read_entry(7, number) for number in range(3)]
    for entry in given:
        index.upsert_entry(entry)
    agent = given[0].parent_id
    held = index.authorized_entries(agent)
    assert held == tuple(given)
    assert all(mine is theirs for mine, theirs in zip(held, given, strict=True))
    assert len({id(entry.parent_id) for entry in held}) == 1
    assert len({id(entry.spiffe_id.trust_domain) for entry in held}) == 1
    again = index.authorized_entries(SpiffeId.parse(str(agent)))
    assert again == held
    # An equal entry read again changes nothing.
    assert not index.upsert_entry(read_entry(7, 0))


def test_equal_selector_lists_are_one_tuple_of_shared_selectors() -> None:
    shared = SharedValues()
    first = shared.selectors((Selector("unix", "uid:0"), Selector("unix", "gid:0")))
    second = shared.selectors((Selector("unix", "uid:0"), Selector("unix", "gid:0")))
    assert first is second
    single = shared.selectors((Selector("unix", "uid:0"),))
    assert single[0] is first[0]


def test_the_table_starts_afresh_past_its_limit_and_stays_correct() -> None:
    shared = SharedValues(limit=10)
    for number in range(100):
        selector = Selector("k8s", f"pod-uid:{number}")
        assert shared.selectors((selector,)) == (selector,)
        assert len(shared) <= 10
