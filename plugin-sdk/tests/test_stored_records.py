"""What datastores on a database share: batch decisions, node rows, secrets kept out of
messages (the contract suites exercise them through every database plugin; these pin the
rules in microseconds)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from pyspire_sdk.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from pyspire_sdk.model import (
    AttestedNode,
    FederationProfile,
    FederationRelationship,
    RegistrationEntry,
)
from pyspire_sdk.plugins.datastore import ChangeKind
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.stored_records import (
    RELATIONSHIP_ROW,
    Decoder,
    assemble_node_selectors,
    change_event_from_row,
    entry_identity,
    entry_update_candidates,
    from_micros,
    node_columns,
    node_from_row,
    plan_entry_creates,
    plan_entry_deletes,
    plan_entry_updates,
    prepare_new_entries,
    relationship_columns,
    relationship_from_row,
    restorable_entries,
    scrub_secrets,
    to_micros,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
AGENT = SpiffeId.parse("spiffe://example.org/agent")
PARTNER = TrustDomain("partner.test")


def _entry(path: str, **changes: object) -> RegistrationEntry:
    return replace(
        RegistrationEntry(
            spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
            parent_id=AGENT,
            selectors=(Selector("unix", "uid:1"),),
        ),
        **changes,  # type: ignore[arg-type]
    )


def test_a_batch_create_decides_each_item_in_order() -> None:
    stored = prepare_new_entries([_entry("/stored", id="s")], NOW)[0]
    assert isinstance(stored, RegistrationEntry)
    items = [
        _entry("/new", id="n1"),
        _entry("/new", id="n2"),  # the same identity as the item before it
        _entry("/stored"),  # a stored identity
        _entry("/taken", id="s"),  # a stored id
        _entry("/federated", federates_with=(PARTNER,)),  # no bundle
        _entry("/no-selectors", selectors=()),
    ]
    prepared = prepare_new_entries(items, NOW)
    plan = plan_entry_creates(prepared, {"s"}, {entry_identity(stored): stored}, set())
    first = plan.results[0]
    assert isinstance(first, tuple) and first[1] is False and first[0].created_at == NOW
    assert plan.results[1] == (first[0], True)
    assert plan.results[2] == (stored, True)
    assert isinstance(plan.results[3], AlreadyExistsError)
    assert isinstance(plan.results[4], InvalidArgumentError)
    assert isinstance(plan.results[5], InvalidArgumentError)
    assert plan.accepted == [first[0]]


def test_a_batch_update_applies_items_on_top_of_each_other() -> None:
    one = replace(_entry("/one", id="1"), created_at=NOW)
    two = replace(_entry("/two", id="2"), created_at=NOW)
    current = {"1": (10, one), "2": (20, two)}
    items = [
        replace(one, hint="a"),
        replace(one, hint="b"),
        replace(two, spiffe_id=one.spiffe_id),  # would take one's identity
        _entry("/missing", id="3"),
    ]
    fields = frozenset({"hint", "spiffe_id"})
    candidates = entry_update_candidates(items, fields, current)
    assert len(candidates) == 3
    plan = plan_entry_updates(items, fields, current, {}, set())
    assert [r.revision_number for r in plan.results[:2]] == [1, 2]  # type: ignore[union-attr]
    assert isinstance(plan.results[2], AlreadyExistsError)
    assert isinstance(plan.results[3], NotFoundError)
    assert plan.changed == {10: plan.results[1]}
    assert plan.events == ["1", "1"]


def test_node_rows_round_trip_with_any_time_encoding() -> None:
    node = AttestedNode(
        spiffe_id=AGENT,
        attestation_type="join_token",
        x509_svid_serial_number="01",
        x509_svid_expires_at=NOW,
        selectors=(Selector("a", "b"),),
        can_reattest=True,
    )
    row = (7, str(AGENT), *node_columns(node, to_micros))
    assert row[4] == to_micros(NOW)
    assert node_from_row(Decoder(), row, node.selectors, from_micros) == node


def test_every_node_selectors_are_grouped_by_node() -> None:
    rows = [
        ("spiffe://example.org/a", "k", "1"),
        ("spiffe://example.org/a", "k", "2"),
        ("spiffe://example.org/b", "k", "1"),
    ]
    found = assemble_node_selectors(rows)
    assert found == {
        SpiffeId.parse("spiffe://example.org/a"): (Selector("k", "1"), Selector("k", "2")),
        SpiffeId.parse("spiffe://example.org/b"): (Selector("k", "1"),),
    }


def test_secrets_are_scrubbed_plain_and_url_encoded() -> None:
    text = "access denied for p@ss (dsn mysql://u:p%40ss@h/db)"
    assert scrub_secrets(text, ("p@ss", "")) == "access denied for *** (dsn mysql://u:***@h/db)"


def test_a_restore_keeps_ids_and_times_and_refuses_entries_without_them() -> None:
    kept = _entry("/w", id="e1", created_at=NOW, selectors=(Selector("unix", "uid:1"),) * 2)
    (restored,) = restorable_entries([kept])
    assert (restored.id, restored.created_at, restored.selectors) == (
        "e1",
        NOW,
        (Selector("unix", "uid:1"),),
    )
    for missing in (_entry("/w", created_at=NOW), _entry("/w", id="e2")):
        with pytest.raises(InvalidArgumentError, match="to restore needs its id and created_at"):
            restorable_entries([kept, missing])


def test_a_batch_delete_finds_each_id_once_in_order() -> None:
    first, second = _entry("/a", id="a"), _entry("/b", id="b")
    found = {"a": (1, first), "b": (2, second)}
    results, deleted = plan_entry_deletes(["b", "x", "a", "b"], found)
    assert results[0] == second
    assert isinstance(results[1], NotFoundError)
    assert results[2] == first
    assert isinstance(results[3], NotFoundError)
    assert deleted == [(2, "b"), (1, "a")]
    assert found == {}


def test_relationship_rows_round_trip() -> None:
    relationship = FederationRelationship(
        trust_domain=PARTNER,
        bundle_endpoint_url="https://partner.test/bundle",
        profile=FederationProfile.HTTPS_SPIFFE,
        endpoint_spiffe_id=SpiffeId.parse("spiffe://partner.test/bundle-server"),
    )
    row = relationship_columns(relationship)
    assert len(row) == len(RELATIONSHIP_ROW)
    assert row[0] == "partner.test"
    assert relationship_from_row(Decoder(), row) == relationship
    web = replace(relationship, profile=FederationProfile.HTTPS_WEB, endpoint_spiffe_id=None)
    assert relationship_from_row(Decoder(), relationship_columns(web)) == web


def test_change_events_read_times_as_stored() -> None:
    event = change_event_from_row(
        (7, "node", "spiffe://example.org/a", to_micros(NOW)), from_micros
    )
    assert (event.event_id, event.kind, event.object_id) == (
        7,
        ChangeKind.NODE,
        "spiffe://example.org/a",
    )
    assert event.created_at == NOW
    assert change_event_from_row((1, "entry", "e", NOW)).created_at == NOW
