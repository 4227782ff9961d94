"""The authorized-entries index: who may hold what, and how changes move the answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pyspire.registry.authorized import AuthorizedEntriesIndex
from pyspire.registry.validation import node_alias_parent
from pyspire_sdk.model import RegistrationEntry
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
SERVER = node_alias_parent(TD)
AGENT_A = SpiffeId.parse("spiffe://example.org/spire/agent/a")
AGENT_B = SpiffeId.parse("spiffe://example.org/spire/agent/b")
NOW = datetime(2030, 1, 1, tzinfo=UTC)

REGION = Selector("aws_iid", "region:us-east-1")
ACCOUNT = Selector("aws_iid", "account_id:123")
TAG = Selector("aws_iid", "tag:role:db")


def sid(path: str) -> SpiffeId:
    return SpiffeId.from_path(TD, path)


def entry(
    entry_id: str,
    spiffe_path: str,
    parent: SpiffeId | str,
    *selectors: Selector,
    expires_at: datetime | None = None,
) -> RegistrationEntry:
    parent_id = parent if isinstance(parent, SpiffeId) else sid(parent)
    return RegistrationEntry(
        id=entry_id,
        spiffe_id=sid(spiffe_path),
        parent_id=parent_id,
        selectors=selectors or (Selector("unix", f"uid:{entry_id}"),),
        expires_at=expires_at,
    )


def ids(entries: tuple[RegistrationEntry, ...]) -> list[str]:
    return [item.id for item in entries]


@pytest.fixture
def index() -> AuthorizedEntriesIndex:
    return AuthorizedEntriesIndex(TD)


def test_direct_children_of_the_agent(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [
            entry("w1", "/w1", AGENT_A),
            entry("w2", "/w2", AGENT_A),
            entry("other", "/other", AGENT_B),
        ],
        {},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["w1", "w2"]
    assert ids(index.authorized_entries(AGENT_B)) == ["other"]


def test_unknown_agent_gets_nothing(index: AuthorizedEntriesIndex) -> None:
    index.load([entry("w1", "/w1", AGENT_A)], {})
    assert index.authorized_entries(sid("/spire/agent/nobody")) == ()


def test_results_are_tuples_of_the_stored_entries(index: AuthorizedEntriesIndex) -> None:
    stored = entry("w1", "/w1", AGENT_A)
    index.load([stored], {})
    found = index.authorized_entries(AGENT_A)
    assert isinstance(found, tuple)
    assert found[0] is stored


def test_alias_matches_when_all_its_selectors_are_on_the_node(
    index: AuthorizedEntriesIndex,
) -> None:
    index.load(
        [
            entry("alias", "/nodes/east", SERVER, REGION, ACCOUNT),
            entry("w1", "/w1", "/nodes/east"),
        ],
        {AGENT_A: (REGION, ACCOUNT, TAG), AGENT_B: (REGION,)},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["w1"]
    # B has only one of the alias's two selectors.
    assert index.authorized_entries(AGENT_B) == ()


def test_alias_with_an_extra_selector_is_not_matched(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [
            entry("alias", "/nodes/db", SERVER, REGION, TAG),
            entry("w1", "/w1", "/nodes/db"),
        ],
        {AGENT_A: (REGION, ACCOUNT)},
    )
    assert index.authorized_entries(AGENT_A) == ()
    assert index.matching_aliases((REGION, ACCOUNT)) == ()
    assert ids(index.matching_aliases((REGION, ACCOUNT, TAG))) == ["alias"]


def test_alias_entries_themselves_are_not_returned(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [entry("alias", "/nodes/east", SERVER, REGION), entry("w1", "/w1", "/nodes/east")],
        {AGENT_A: (REGION,)},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["w1"]
    assert index.get_entry("alias") is not None


def test_many_aliases_sharing_a_selector_are_all_checked(index: AuthorizedEntriesIndex) -> None:
    entries = []
    for number in range(20):
        extra = Selector("k8s_psat", f"cluster:c{number}")
        entries.append(entry(f"alias{number}", f"/nodes/n{number}", SERVER, REGION, extra))
        entries.append(entry(f"w{number}", f"/w{number}", f"/nodes/n{number}"))
    index.load(entries, {AGENT_A: (REGION, Selector("k8s_psat", "cluster:c7"))})
    assert ids(index.authorized_entries(AGENT_A)) == ["w7"]


def test_two_aliases_with_the_same_id_are_walked_once(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [
            entry("alias1", "/nodes/east", SERVER, REGION),
            entry("alias2", "/nodes/east", SERVER, ACCOUNT),
            entry("w1", "/w1", "/nodes/east"),
        ],
        {AGENT_A: (REGION, ACCOUNT)},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["w1"]


def test_descendants_two_and_three_levels_deep(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [
            entry("l1", "/l1", AGENT_A),
            entry("l2", "/l2", "/l1"),
            entry("l3", "/l3", "/l2"),
            entry("alias", "/nodes/east", SERVER, REGION),
            entry("a1", "/a1", "/nodes/east"),
            entry("a2", "/a2", "/a1"),
            entry("a3", "/a3", "/a2"),
            entry("unrelated", "/u", "/nowhere"),
        ],
        {AGENT_A: (REGION,)},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["l1", "l2", "l3", "a1", "a2", "a3"]


def test_walk_is_depth_first_preorder(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [
            entry("x", "/x", AGENT_A),
            entry("y", "/y", AGENT_A),
            entry("x1", "/x1", "/x"),
            entry("y1", "/y1", "/y"),
            entry("x2", "/x2", "/x"),
            entry("x1a", "/x1a", "/x1"),
        ],
        {},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["x", "x1", "x1a", "x2", "y", "y1"]


def test_cycles_terminate_and_return_each_entry_once(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [
            entry("root", "/a", AGENT_A),
            entry("a-to-b", "/b", "/a"),
            entry("b-to-a", "/a", "/b"),
            entry("self", "/c", "/c"),
            entry("c", "/c", "/b"),
        ],
        {},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["root", "a-to-b", "b-to-a", "c", "self"]


def test_entries_under_another_agent_are_not_leaked(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [
            entry("mine", "/mine", AGENT_A),
            entry("theirs", "/theirs", AGENT_B),
            entry("theirs-child", "/theirs/child", "/theirs"),
            entry("alias-b", "/nodes/b", SERVER, TAG),
            entry("via-alias-b", "/via-b", "/nodes/b"),
        ],
        {AGENT_A: (REGION,), AGENT_B: (TAG,)},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["mine"]
    assert ids(index.authorized_entries(AGENT_B)) == ["theirs", "theirs-child", "via-alias-b"]


def test_deep_chain_does_not_recurse(index: AuthorizedEntriesIndex) -> None:
    depth = 5000
    chain = [entry("e0", "/e0", AGENT_A)]
    chain += [entry(f"e{n}", f"/e{n}", f"/e{n - 1}") for n in range(1, depth)]
    index.load(chain, {})
    assert len(index.authorized_entries(AGENT_A)) == depth


def test_removal_updates_results(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [entry("l1", "/l1", AGENT_A), entry("l2", "/l2", "/l1"), entry("w", "/w", AGENT_A)], {}
    )
    removed = index.remove_entry("l1")
    assert removed is not None
    assert removed.id == "l1"
    assert ids(index.authorized_entries(AGENT_A)) == ["w"]
    assert index.remove_entry("l1") is None
    assert index.get_entry("l1") is None
    assert index.get_entry("l2") is not None


def test_reparenting_moves_an_entry_and_its_subtree(index: AuthorizedEntriesIndex) -> None:
    index.load([entry("l1", "/l1", AGENT_A), entry("l2", "/l2", "/l1")], {})
    assert index.upsert_entry(entry("l1", "/l1", AGENT_B))
    assert index.authorized_entries(AGENT_A) == ()
    assert ids(index.authorized_entries(AGENT_B)) == ["l1", "l2"]


def test_changing_spiffe_id_cuts_off_old_children(index: AuthorizedEntriesIndex) -> None:
    index.load([entry("l1", "/l1", AGENT_A), entry("l2", "/l2", "/l1")], {})
    index.upsert_entry(entry("l1", "/renamed", AGENT_A))
    assert ids(index.authorized_entries(AGENT_A)) == ["l1"]


def test_entry_can_become_an_alias_and_back(index: AuthorizedEntriesIndex) -> None:
    index.load([entry("e", "/nodes/east", AGENT_B), entry("w", "/w", "/nodes/east")], {})
    index.set_node_selectors(AGENT_A, (REGION,))
    assert index.authorized_entries(AGENT_A) == ()
    index.upsert_entry(entry("e", "/nodes/east", SERVER, REGION))
    assert ids(index.authorized_entries(AGENT_A)) == ["w"]
    assert index.stats().aliases == 1
    index.upsert_entry(entry("e", "/nodes/east", AGENT_B, REGION))
    assert index.authorized_entries(AGENT_A) == ()
    assert ids(index.authorized_entries(AGENT_B)) == ["e", "w"]
    assert index.stats().aliases == 0


def test_alias_selector_change_updates_matching(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [entry("alias", "/nodes/x", SERVER, REGION), entry("w", "/w", "/nodes/x")],
        {AGENT_A: (REGION,)},
    )
    assert ids(index.authorized_entries(AGENT_A)) == ["w"]
    index.upsert_entry(entry("alias", "/nodes/x", SERVER, REGION, TAG))
    assert index.authorized_entries(AGENT_A) == ()
    index.remove_entry("alias")
    assert index.stats().aliases == 0
    assert index.matching_aliases((REGION, TAG)) == ()


def test_node_selector_change_updates_results(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [entry("alias", "/nodes/db", SERVER, REGION, TAG), entry("w", "/w", "/nodes/db")],
        {AGENT_A: (REGION,)},
    )
    assert index.authorized_entries(AGENT_A) == ()
    assert index.set_node_selectors(AGENT_A, (REGION, TAG))
    assert ids(index.authorized_entries(AGENT_A)) == ["w"]
    assert index.node_selectors(AGENT_A) == frozenset({REGION, TAG})
    assert index.remove_node(AGENT_A)
    assert index.authorized_entries(AGENT_A) == ()
    assert not index.remove_node(AGENT_A)


def test_removing_a_node_keeps_entries_parented_by_it(index: AuthorizedEntriesIndex) -> None:
    index.load([entry("w", "/w", AGENT_A)], {AGENT_A: (REGION,)})
    index.remove_node(AGENT_A)
    assert ids(index.authorized_entries(AGENT_A)) == ["w"]


def test_expired_entries_and_what_hangs_below_them_are_left_out(
    index: AuthorizedEntriesIndex,
) -> None:
    index.load(
        [
            entry("old", "/old", AGENT_A, expires_at=NOW - timedelta(seconds=1)),
            entry("old-child", "/old/child", "/old"),
            entry("fresh", "/fresh", AGENT_A, expires_at=NOW + timedelta(hours=1)),
            entry("forever", "/forever", AGENT_A),
        ],
        {},
    )
    assert ids(index.authorized_entries(AGENT_A, NOW)) == ["fresh", "forever"]
    assert ids(index.authorized_entries(AGENT_A, NOW + timedelta(hours=2))) == ["forever"]
    # Without a time, nothing is filtered.
    assert ids(index.authorized_entries(AGENT_A)) == [
        "old",
        "old-child",
        "fresh",
        "forever",
    ]


def test_expired_entry_does_not_hide_a_live_one_with_the_same_id(
    index: AuthorizedEntriesIndex,
) -> None:
    index.load(
        [
            entry("old", "/shared", AGENT_A, expires_at=NOW - timedelta(seconds=1)),
            entry("live", "/shared", AGENT_A),
            entry("child", "/child", "/shared"),
        ],
        {},
    )
    assert ids(index.authorized_entries(AGENT_A, NOW)) == ["live", "child"]


def test_revision_moves_only_on_real_changes(index: AuthorizedEntriesIndex) -> None:
    start = index.revision
    index.load([entry("w", "/w", AGENT_A)], {})
    after_load = index.revision
    assert after_load > start
    assert not index.upsert_entry(entry("w", "/w", AGENT_A))
    assert index.revision == after_load
    assert index.upsert_entry(entry("w", "/w2", AGENT_A))
    assert index.revision == after_load + 1
    assert index.remove_entry("missing") is None
    assert index.revision == after_load + 1
    assert not index.set_node_selectors(AGENT_A, ())
    assert index.set_node_selectors(AGENT_A, (REGION,))
    assert not index.set_node_selectors(AGENT_A, (REGION, REGION))
    assert index.revision == after_load + 2


def test_load_replaces_everything(index: AuthorizedEntriesIndex) -> None:
    index.load(
        [entry("alias", "/n", SERVER, REGION), entry("w", "/w", AGENT_A)], {AGENT_A: (REGION,)}
    )
    index.load([entry("v", "/v", AGENT_B)], {})
    assert index.authorized_entries(AGENT_A) == ()
    assert set(index.entries_by_id) == {"v"}
    stats = index.stats()
    assert (stats.entries, stats.aliases, stats.nodes, stats.parents) == (1, 0, 0, 1)


def test_load_with_a_repeated_id_keeps_the_last(index: AuthorizedEntriesIndex) -> None:
    index.load([entry("w", "/first", AGENT_A), entry("w", "/second", AGENT_B)], {})
    assert index.authorized_entries(AGENT_A) == ()
    assert [item.spiffe_id.path for item in index.authorized_entries(AGENT_B)] == ["/second"]
    assert len(index) == 1


def test_entries_by_id_is_a_read_only_live_view(index: AuthorizedEntriesIndex) -> None:
    view = index.entries_by_id
    index.upsert_entry(entry("w", "/w", AGENT_A))
    assert list(view) == ["w"]
    with pytest.raises(TypeError):
        view["x"] = entry("x", "/x", AGENT_A)  # type: ignore[index]


def test_parents_in_another_trust_domain_do_not_collide(index: AuthorizedEntriesIndex) -> None:
    foreign_agent = SpiffeId.parse("spiffe://other.org/spire/agent/a")
    foreign = RegistrationEntry(
        id="f",
        spiffe_id=sid("/f"),
        parent_id=foreign_agent,
        selectors=(REGION,),
    )
    foreign_alias = RegistrationEntry(
        id="fa",
        spiffe_id=sid("/nodes/f"),
        parent_id=SpiffeId.parse("spiffe://other.org/spire/server"),
        selectors=(REGION,),
    )
    index.load([foreign, foreign_alias, entry("w", "/w", "/nodes/f")], {AGENT_A: (REGION,)})
    assert index.authorized_entries(AGENT_A) == ()
    assert index.stats().aliases == 0


def test_aliases_are_walked_in_order_of_their_ids(index: AuthorizedEntriesIndex) -> None:
    selectors = [Selector("x509pop", f"s{number}") for number in range(8)]
    entries = []
    for number, selector in enumerate(reversed(selectors)):
        entries.append(entry(f"alias{number}", f"/nodes/n{number}", SERVER, selector))
        entries.append(entry(f"w{number}", f"/w{number}", f"/nodes/n{number}"))
    index.load(entries, {AGENT_A: selectors})
    assert ids(index.authorized_entries(AGENT_A)) == [f"w{number}" for number in range(8)]
    assert ids(index.matching_aliases(selectors)) == [f"alias{number}" for number in range(8)]
