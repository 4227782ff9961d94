"""The contract every datastore plugin must pass.

Subclass :class:`DataStoreContract` in the plugin's tests and provide a ``datastore`` fixture: a
configured, empty datastore whose host services are the ``host_services`` fixture (so its clock
is the test's ``fake_clock``)::

    class TestMyDataStore(DataStoreContract):
        @pytest_asyncio.fixture
        async def datastore(self, host_services, tmp_path):
            store = MyDataStore()
            await store.configure(MyConfig(path=tmp_path / "db"), host_services)
            yield store
            await store.close()

The suite follows SPIRE's datastore tests in spirit: every method, every filter and match mode,
paging through many pages, update masks, the errors each method promises, join-token
consumption under concurrency, the change feed, bundle delete modes and pruning, and atomicity
(a call that fails leaves nothing behind). The optional interfaces are tested when the datastore
offers them: ``CopyableDataStore`` and ``WatchableDataStore`` (a write of an entry, of a node's
selectors and of a bundle is signalled; the fake clock is moved while the test waits, so a watch
that polls on the host clock runs too).
"""

from __future__ import annotations

__all__ = ["DataStoreContract"]

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from pyspire_sdk.model import (
    AttestedNode,
    FederationProfile,
    FederationRelationship,
    JoinToken,
    RegistrationEntry,
)
from pyspire_sdk.plugins.datastore import (
    BundleDeleteMode,
    ChangeKind,
    ChangeSignal,
    CopyableDataStore,
    DataStore,
    EntryFilter,
    FailedPreconditionError,
    FederatesWithMatch,
    MatchBehavior,
    NodeFilter,
    Page,
    SelectorMatch,
    WatchableDataStore,
)
from pyspire_sdk.selector import Selector
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.fake_clock import FakeClock

TD = TrustDomain("example.org")
FED_A = TrustDomain("a.test")
FED_B = TrustDomain("b.test")
FED_C = TrustDomain("c.test")
PARENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/node-1")
OTHER_PARENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/node-2")

_BAD_PAGE_TOKENS = ("not a token", "9" * 23, "9" * 5000, "-1", "\u0661\u0662", "\x00")
"""Page tokens no datastore gives out: each must be refused with InvalidArgumentError (a caller
may send any string), never crash the query."""


def _id(path: str) -> SpiffeId:
    return SpiffeId.from_path(TD, path)


def _selectors(*texts: str) -> tuple[Selector, ...]:
    return tuple(Selector.parse(text) for text in texts)


def _entry(
    path: str,
    *selectors: str,
    parent: SpiffeId = PARENT,
    **changes: Any,
) -> RegistrationEntry:
    return RegistrationEntry(
        spiffe_id=_id(path),
        parent_id=parent,
        selectors=_selectors(*(selectors or ("unix:uid:1000",))),
        **changes,
    )


def _node(name: str, **changes: Any) -> AttestedNode:
    base = AttestedNode(
        spiffe_id=_id(f"/spire/agent/test/{name}"),
        attestation_type="test",
        x509_svid_serial_number=f"serial-{name}",
        x509_svid_expires_at=datetime(2030, 1, 2, tzinfo=UTC),
    )
    return replace(base, **changes)


@cache
def _ca_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(name: str, not_after: datetime) -> bytes:
    """A self-signed CA certificate (DER) that expires at ``not_after``."""
    key = _ca_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=30))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.DER)


def _ids(entries: Iterable[RegistrationEntry]) -> set[str]:
    return {entry.id for entry in entries}


class DataStoreContract:
    """Tests every :class:`~pyspire_sdk.plugins.datastore.DataStore` must pass.

    The subclass provides the ``datastore`` fixture; see the module documentation.
    """

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    async def _bundles(datastore: DataStore, *trust_domains: TrustDomain) -> None:
        for trust_domain in trust_domains:
            await datastore.create_bundle(
                Bundle(trust_domain=trust_domain, jwt_authorities=(JwtAuthority("k", b"key"),))
            )

    @staticmethod
    async def _all_entries(
        datastore: DataStore, entry_filter: EntryFilter | None = None, size: int = 7
    ) -> list[RegistrationEntry]:
        found: list[RegistrationEntry] = []
        token = ""
        for _ in range(10_000):
            page = await datastore.list_entries(entry_filter, Page(size, token))
            assert len(page.entries) <= size
            found.extend(page.entries)
            token = page.next_page_token
            if not token:
                return found
        raise AssertionError("paging did not end")

    # -- entries: create and get -------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_create_entry_assigns_id_time_and_revision(
        self, datastore: DataStore, fake_clock: FakeClock
    ) -> None:
        await fake_clock.advance(timedelta(seconds=12, microseconds=345))
        created = await datastore.create_entry(_entry("/w", revision_number=9))
        assert created.id
        assert created.revision_number == 0
        assert created.created_at == fake_clock.now()
        assert await datastore.get_entry(created.id) == created

    @pytest.mark.asyncio
    async def test_create_entry_ids_are_unique(self, datastore: DataStore) -> None:
        first = await datastore.create_entry(_entry("/w1"))
        second = await datastore.create_entry(_entry("/w2"))
        assert first.id != second.id

    @pytest.mark.asyncio
    async def test_create_entry_keeps_a_given_id(self, datastore: DataStore) -> None:
        created = await datastore.create_entry(_entry("/w", id="my-entry"))
        assert created.id == "my-entry"
        assert await datastore.get_entry("my-entry") == created

    @pytest.mark.asyncio
    async def test_create_entry_round_trips_every_field(self, datastore: DataStore) -> None:
        await self._bundles(datastore, FED_B, FED_A)
        entry = _entry(
            "/full",
            "k8s:ns:prod",
            "k8s:sa:api",
            "unix:uid:0",
            x509_svid_ttl=3600,
            jwt_svid_ttl=300,
            federates_with=(FED_B, FED_A),
            admin=True,
            downstream=True,
            expires_at=datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
            dns_names=("b.example.org", "a.example.org"),
            store_svid=True,
            hint="external",
        )
        created = await datastore.create_entry(entry)
        assert created == replace(entry, id=created.id, created_at=created.created_at)
        assert await datastore.get_entry(created.id) == created
        assert (await datastore.list_entries()).entries == (created,)

    @pytest.mark.asyncio
    async def test_create_entry_drops_duplicate_list_items(self, datastore: DataStore) -> None:
        created = await datastore.create_entry(
            _entry("/w", "a:1", "b:2", "a:1", dns_names=("x.test", "x.test", "y.test"))
        )
        assert created.selectors == _selectors("a:1", "b:2")
        assert created.dns_names == ("x.test", "y.test")
        assert await datastore.get_entry(created.id) == created

    @pytest.mark.asyncio
    async def test_create_entry_rejects_same_identity(self, datastore: DataStore) -> None:
        await datastore.create_entry(_entry("/w", "a:1", "b:2"))
        with pytest.raises(AlreadyExistsError):
            await datastore.create_entry(_entry("/w", "b:2", "a:1", hint="other fields differ"))
        assert await datastore.count_entries() == 1

    @pytest.mark.asyncio
    async def test_create_entry_accepts_different_identity(self, datastore: DataStore) -> None:
        await datastore.create_entry(_entry("/w", "a:1", "b:2"))
        await datastore.create_entry(_entry("/w", "a:1"))
        await datastore.create_entry(_entry("/w", "a:1", "b:2", parent=OTHER_PARENT))
        await datastore.create_entry(_entry("/w2", "a:1", "b:2"))
        assert await datastore.count_entries() == 4

    @pytest.mark.asyncio
    async def test_create_entry_rejects_an_existing_id(self, datastore: DataStore) -> None:
        await datastore.create_entry(_entry("/w1", id="same"))
        with pytest.raises(AlreadyExistsError):
            await datastore.create_entry(_entry("/w2", id="same"))
        assert await datastore.count_entries() == 1

    @pytest.mark.asyncio
    async def test_create_entry_rejects_invalid_entries(self, datastore: DataStore) -> None:
        with pytest.raises(InvalidArgumentError):
            await datastore.create_entry(replace(_entry("/w"), selectors=()))
        with pytest.raises(InvalidArgumentError):
            await datastore.create_entry(_entry("/w", x509_svid_ttl=-1))
        with pytest.raises(InvalidArgumentError):
            await datastore.create_entry(_entry("/w", jwt_svid_ttl=-1))
        assert await datastore.count_entries() == 0

    @pytest.mark.asyncio
    async def test_create_entry_federating_without_bundle_writes_nothing(
        self, datastore: DataStore
    ) -> None:
        await self._bundles(datastore, FED_A)
        before = await datastore.last_change_event_id()
        with pytest.raises(InvalidArgumentError):
            await datastore.create_entry(_entry("/w", federates_with=(FED_A, FED_B)))
        assert await datastore.count_entries() == 0
        assert await datastore.list_all_entries() == []
        assert await datastore.last_change_event_id() == before

    @pytest.mark.asyncio
    async def test_create_entry_if_not_exists(self, datastore: DataStore) -> None:
        first, existed = await datastore.create_entry_if_not_exists(_entry("/w", "a:1", "b:2"))
        assert not existed
        again, existed = await datastore.create_entry_if_not_exists(
            _entry("/w", "b:2", "a:1", hint="ignored")
        )
        assert existed
        assert again == first
        assert await datastore.count_entries() == 1

    @pytest.mark.asyncio
    async def test_get_entry_missing(self, datastore: DataStore) -> None:
        assert await datastore.get_entry("nope") is None

    @pytest.mark.asyncio
    async def test_concurrent_creates_all_land(self, datastore: DataStore) -> None:
        created = await asyncio.gather(
            *(datastore.create_entry(_entry(f"/w{i}")) for i in range(40))
        )
        assert len(_ids(created)) == 40
        assert await datastore.count_entries() == 40

    # -- entries: filters ---------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_list_entries_by_simple_fields(self, datastore: DataStore) -> None:
        a = await datastore.create_entry(_entry("/a", hint="h1"))
        b = await datastore.create_entry(_entry("/b", parent=OTHER_PARENT, downstream=True))
        c = await datastore.create_entry(_entry("/a", "unix:uid:2", hint="h2", downstream=True))

        async def ids(entry_filter: EntryFilter) -> set[str]:
            assert await datastore.count_entries(entry_filter) == len(
                (await datastore.list_entries(entry_filter)).entries
            )
            return _ids((await datastore.list_entries(entry_filter)).entries)

        assert await ids(EntryFilter(by_spiffe_id=_id("/a"))) == {a.id, c.id}
        assert await ids(EntryFilter(by_spiffe_id=_id("/none"))) == set()
        assert await ids(EntryFilter(by_parent_id=OTHER_PARENT)) == {b.id}
        assert await ids(EntryFilter(by_parent_id=PARENT)) == {a.id, c.id}
        assert await ids(EntryFilter(by_hint="h1")) == {a.id}
        assert await ids(EntryFilter(by_hint="")) == {b.id}
        assert await ids(EntryFilter(by_downstream=True)) == {b.id, c.id}
        assert await ids(EntryFilter(by_downstream=False)) == {a.id}
        assert await ids(EntryFilter(by_spiffe_id=_id("/a"), by_downstream=True)) == {c.id}
        assert await ids(EntryFilter()) == {a.id, b.id, c.id}

    @pytest.mark.parametrize(
        ("match", "expected"),
        [
            (MatchBehavior.EXACT, {"ab"}),
            (MatchBehavior.SUBSET, {"a", "ab", "b"}),
            (MatchBehavior.SUPERSET, {"ab", "abc"}),
            (MatchBehavior.ANY, {"a", "ab", "b", "abc", "ad"}),
        ],
    )
    @pytest.mark.asyncio
    async def test_list_entries_by_selectors(
        self, datastore: DataStore, match: MatchBehavior, expected: set[str]
    ) -> None:
        sets = {
            "a": ("t:a",),
            "ab": ("t:a", "t:b"),
            "b": ("t:b",),
            "abc": ("t:a", "t:b", "t:c"),
            "c": ("t:c",),
            "ad": ("t:a", "t:d"),
        }
        names: dict[str, str] = {}
        for name, selectors in sets.items():
            names[(await datastore.create_entry(_entry(f"/{name}", *selectors))).id] = name
        entry_filter = EntryFilter(by_selectors=SelectorMatch(_selectors("t:b", "t:a"), match))
        found = (await datastore.list_entries(entry_filter)).entries
        assert {names[entry.id] for entry in found} == expected
        assert await datastore.count_entries(entry_filter) == len(expected)
        paged = await self._all_entries(datastore, entry_filter, size=1)
        assert [entry.id for entry in paged] == [entry.id for entry in found]

    @pytest.mark.parametrize(
        ("match", "expected"),
        [
            (MatchBehavior.EXACT, {"ab"}),
            (MatchBehavior.SUBSET, {"a", "ab", "b"}),
            (MatchBehavior.SUPERSET, {"ab", "abc"}),
            (MatchBehavior.ANY, {"a", "ab", "b", "abc"}),
        ],
    )
    @pytest.mark.asyncio
    async def test_list_entries_by_federates_with(
        self, datastore: DataStore, match: MatchBehavior, expected: set[str]
    ) -> None:
        await self._bundles(datastore, FED_A, FED_B, FED_C)
        sets = {
            "none": (),
            "a": (FED_A,),
            "ab": (FED_A, FED_B),
            "b": (FED_B,),
            "abc": (FED_A, FED_B, FED_C),
            "c": (FED_C,),
        }
        names: dict[str, str] = {}
        for name, trust_domains in sets.items():
            created = await datastore.create_entry(_entry(f"/{name}", federates_with=trust_domains))
            names[created.id] = name
        entry_filter = EntryFilter(by_federates_with=FederatesWithMatch((FED_B, FED_A), match))
        found = (await datastore.list_entries(entry_filter)).entries
        assert {names[entry.id] for entry in found} == expected
        assert await datastore.count_entries(entry_filter) == len(expected)

    @pytest.mark.asyncio
    async def test_selector_filter_must_not_be_empty(self) -> None:
        with pytest.raises(InvalidArgumentError):
            SelectorMatch((), MatchBehavior.ANY)
        with pytest.raises(InvalidArgumentError):
            FederatesWithMatch((), MatchBehavior.ANY)

    @pytest.mark.asyncio
    async def test_filters_are_combined(self, datastore: DataStore) -> None:
        await self._bundles(datastore, FED_A)
        wanted = await datastore.create_entry(
            _entry("/x", "t:a", federates_with=(FED_A,), hint="h")
        )
        await datastore.create_entry(_entry("/x", "t:a", "t:b", federates_with=(FED_A,), hint="h"))
        await datastore.create_entry(_entry("/x", "t:c", federates_with=(FED_A,), hint="h"))
        await datastore.create_entry(_entry("/y", "t:a", federates_with=(FED_A,), hint="h"))
        entry_filter = EntryFilter(
            by_spiffe_id=_id("/x"),
            by_parent_id=PARENT,
            by_selectors=SelectorMatch(_selectors("t:a"), MatchBehavior.EXACT),
            by_federates_with=FederatesWithMatch((FED_A,), MatchBehavior.EXACT),
            by_hint="h",
            by_downstream=False,
        )
        assert (await datastore.list_entries(entry_filter)).entries == (wanted,)

    # -- entries: paging ----------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_list_entries_pages_without_duplicates_or_omissions(
        self, datastore: DataStore
    ) -> None:
        created = [await datastore.create_entry(_entry(f"/w{i:03}")) for i in range(53)]
        everything = (await datastore.list_entries(None, Page(0))).entries
        assert everything == tuple(created)
        for size in (1, 10, 53, 100):
            paged = await self._all_entries(datastore, size=size)
            assert [entry.id for entry in paged] == [entry.id for entry in created]
        first = await datastore.list_entries(None, Page(10))
        assert len(first.entries) == 10
        assert first.next_page_token
        last = await datastore.list_entries(None, Page(53))
        assert last.next_page_token == ""

    @pytest.mark.asyncio
    async def test_list_entries_pages_filtered_results(self, datastore: DataStore) -> None:
        odd = []
        for i in range(30):
            created = await datastore.create_entry(_entry(f"/w{i}", hint=str(i % 2)))
            if i % 2:
                odd.append(created)
        paged = await self._all_entries(datastore, EntryFilter(by_hint="1"), size=4)
        assert paged == odd

    @pytest.mark.asyncio
    async def test_list_entries_rejects_a_bad_token(self, datastore: DataStore) -> None:
        await datastore.create_entry(_entry("/w"))
        for token in _BAD_PAGE_TOKENS:
            with pytest.raises(InvalidArgumentError):
                await datastore.list_entries(None, Page(5, token))

    @pytest.mark.asyncio
    async def test_page_size_must_not_be_negative(self) -> None:
        with pytest.raises(InvalidArgumentError):
            Page(-1)

    @pytest.mark.asyncio
    async def test_list_all_entries_matches_list_entries(self, datastore: DataStore) -> None:
        await self._bundles(datastore, FED_A)
        for i in range(25):
            await datastore.create_entry(
                _entry(
                    f"/w{i}",
                    f"unix:uid:{i}",
                    "k8s:ns:default",
                    dns_names=(f"w{i}.test",) if i % 3 == 0 else (),
                    federates_with=(FED_A,) if i % 4 == 0 else (),
                )
            )
        assert await datastore.list_all_entries() == list((await datastore.list_entries()).entries)

    @pytest.mark.asyncio
    async def test_list_all_entries_empty(self, datastore: DataStore) -> None:
        assert await datastore.list_all_entries() == []

    # -- entries: update, delete, prune -------------------------------------------------------

    @pytest.mark.asyncio
    async def test_update_entry_every_field(
        self, datastore: DataStore, fake_clock: FakeClock
    ) -> None:
        await self._bundles(datastore, FED_A)
        created = await datastore.create_entry(_entry("/w", "a:1"))
        await fake_clock.advance(60)
        wanted = RegistrationEntry(
            spiffe_id=_id("/new"),
            parent_id=OTHER_PARENT,
            selectors=_selectors("b:2", "c:3"),
            id=created.id,
            x509_svid_ttl=10,
            jwt_svid_ttl=20,
            federates_with=(FED_A,),
            admin=True,
            downstream=True,
            expires_at=datetime(2032, 1, 1, tzinfo=UTC),
            dns_names=("dns.test",),
            revision_number=77,
            store_svid=True,
            hint="hint",
            created_at=datetime(2000, 1, 1, tzinfo=UTC),
        )
        updated = await datastore.update_entry(wanted)
        assert updated == replace(wanted, revision_number=1, created_at=created.created_at)
        assert await datastore.get_entry(created.id) == updated
        again = await datastore.update_entry(updated)
        assert again.revision_number == 2

    @pytest.mark.asyncio
    async def test_update_entry_with_mask(self, datastore: DataStore) -> None:
        created = await datastore.create_entry(
            _entry("/w", "a:1", hint="old", dns_names=("a.test",), x509_svid_ttl=5)
        )
        change = _entry("/other", "z:9", id=created.id, hint="new", dns_names=(), x509_svid_ttl=9)
        updated = await datastore.update_entry(change, frozenset({"hint", "dns_names"}))
        assert updated == replace(created, hint="new", dns_names=(), revision_number=1)
        assert await datastore.get_entry(created.id) == updated
        selectors_only = await datastore.update_entry(change, frozenset({"selectors"}))
        assert selectors_only.selectors == _selectors("z:9")
        assert selectors_only.spiffe_id == created.spiffe_id
        found = await datastore.list_entries(
            EntryFilter(by_selectors=SelectorMatch(_selectors("z:9"), MatchBehavior.EXACT))
        )
        assert found.entries == (selectors_only,)
        assert (
            await datastore.count_entries(
                EntryFilter(by_selectors=SelectorMatch(_selectors("a:1"), MatchBehavior.ANY))
            )
            == 0
        )

    @pytest.mark.asyncio
    async def test_update_entry_empty_mask_bumps_revision_only(self, datastore: DataStore) -> None:
        created = await datastore.create_entry(_entry("/w"))
        updated = await datastore.update_entry(_entry("/x", id=created.id), frozenset())
        assert updated == replace(created, revision_number=1)

    @pytest.mark.asyncio
    async def test_update_entry_errors(self, datastore: DataStore) -> None:
        first = await datastore.create_entry(_entry("/w", "a:1"))
        second = await datastore.create_entry(_entry("/w", "b:2"))
        before = await datastore.last_change_event_id()
        with pytest.raises(NotFoundError):
            await datastore.update_entry(_entry("/w", id="missing"))
        with pytest.raises(InvalidArgumentError):
            await datastore.update_entry(first, frozenset({"no_such_field"}))
        with pytest.raises(InvalidArgumentError):
            await datastore.update_entry(first, frozenset({"id"}))
        with pytest.raises(AlreadyExistsError):
            await datastore.update_entry(
                replace(second, selectors=_selectors("a:1")), frozenset({"selectors"})
            )
        with pytest.raises(InvalidArgumentError):
            await datastore.update_entry(
                replace(second, federates_with=(FED_C,)), frozenset({"federates_with"})
            )
        with pytest.raises(InvalidArgumentError):
            await datastore.update_entry(replace(second, selectors=()), frozenset({"selectors"}))
        assert await datastore.get_entry(first.id) == first
        assert await datastore.get_entry(second.id) == second
        assert await datastore.last_change_event_id() == before

    @pytest.mark.asyncio
    async def test_update_entry_to_own_identity_is_fine(self, datastore: DataStore) -> None:
        created = await datastore.create_entry(_entry("/w", "a:1", "b:2"))
        updated = await datastore.update_entry(replace(created, selectors=_selectors("b:2", "a:1")))
        assert updated.selectors == _selectors("b:2", "a:1")

    @pytest.mark.asyncio
    async def test_delete_entry(self, datastore: DataStore) -> None:
        created = await datastore.create_entry(_entry("/w", dns_names=("d.test",)))
        assert await datastore.delete_entry(created.id) == created
        assert await datastore.get_entry(created.id) is None
        assert await datastore.count_entries() == 0
        with pytest.raises(NotFoundError):
            await datastore.delete_entry(created.id)
        recreated = await datastore.create_entry(_entry("/w", dns_names=("d.test",)))
        assert recreated.id != created.id

    @pytest.mark.asyncio
    async def test_prune_registration_entries(self, datastore: DataStore) -> None:
        cut = datetime(2030, 6, 1, tzinfo=UTC)
        old = await datastore.create_entry(_entry("/old", expires_at=cut - timedelta(seconds=1)))
        edge = await datastore.create_entry(_entry("/edge", expires_at=cut))
        new = await datastore.create_entry(_entry("/new", expires_at=cut + timedelta(days=1)))
        never = await datastore.create_entry(_entry("/never"))
        last = await datastore.last_change_event_id()
        assert await datastore.prune_registration_entries(cut) == 1
        assert _ids(await datastore.list_all_entries()) == {edge.id, new.id, never.id}
        events = await datastore.list_change_events(last)
        assert [(e.kind, e.object_id) for e in events] == [(ChangeKind.ENTRY, old.id)]
        assert await datastore.prune_registration_entries(cut) == 0

    # -- entries: batches --------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_create_entries_results_follow_the_items(
        self, datastore: DataStore, fake_clock: FakeClock
    ) -> None:
        await self._bundles(datastore, FED_A)
        stored = await datastore.create_entry(_entry("/stored", "a:1", id="taken"))
        await fake_clock.advance(5)
        full = _entry(
            "/full",
            "k8s:ns:prod",
            "unix:uid:0",
            x509_svid_ttl=3600,
            jwt_svid_ttl=300,
            federates_with=(FED_A,),
            admin=True,
            downstream=True,
            expires_at=datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
            dns_names=("b.example.org", "a.example.org", "b.example.org"),
            store_svid=True,
            hint="external",
        )
        items = [
            _entry("/first", "a:1"),
            replace(_entry("/invalid"), selectors=()),
            _entry("/stored", "a:1", hint="same identity as a stored entry"),
            _entry("/first", "a:1", hint="same identity as an earlier item"),
            _entry("/other", id="taken"),
            _entry("/fed", federates_with=(FED_A, FED_B)),
            _entry("/neg", x509_svid_ttl=-1),
            full,
            _entry("/own-id", id="chosen"),
            _entry("/twice", id="chosen"),
        ]
        results = await datastore.create_entries(items)
        assert len(results) == len(items)
        ok = [r for r in results if isinstance(r, RegistrationEntry)]
        assert [type(r) for r in results] == [
            RegistrationEntry,
            InvalidArgumentError,
            AlreadyExistsError,
            AlreadyExistsError,
            AlreadyExistsError,
            InvalidArgumentError,
            InvalidArgumentError,
            RegistrationEntry,
            RegistrationEntry,
            AlreadyExistsError,
        ]
        first, created_full, own = ok
        assert first.spiffe_id == _id("/first")
        assert created_full == replace(
            full,
            id=created_full.id,
            created_at=fake_clock.now(),
            dns_names=("b.example.org", "a.example.org"),
        )
        assert own.id == "chosen"
        assert len({first.id, created_full.id, own.id, stored.id}) == 4
        for created in ok:
            assert created.revision_number == 0
            assert created.created_at == fake_clock.now()
            assert await datastore.get_entry(created.id) == created
        assert await datastore.list_all_entries() == [stored, *ok]
        assert await self._all_entries(datastore) == [stored, *ok]

    @pytest.mark.asyncio
    async def test_create_entries_writes_events_for_created_items_only(
        self, datastore: DataStore
    ) -> None:
        await datastore.create_entry(_entry("/stored"))
        last = await datastore.last_change_event_id()
        results = await datastore.create_entries(
            [_entry("/a"), _entry("/stored"), _entry("/b"), _entry("/a"), _entry("/c")]
        )
        created = [r.id for r in results if isinstance(r, RegistrationEntry)]
        assert len(created) == 3
        events = await datastore.list_change_events(last)
        assert [(e.kind, e.object_id) for e in events] == [
            (ChangeKind.ENTRY, entry_id) for entry_id in created
        ]

    @pytest.mark.asyncio
    async def test_create_entries_failing_items_leave_nothing(self, datastore: DataStore) -> None:
        last = await datastore.last_change_event_id()
        results = await datastore.create_entries(
            [
                _entry("/fed", "x:1", dns_names=("d.test",), federates_with=(FED_C,)),
                replace(_entry("/empty"), selectors=()),
            ]
        )
        assert all(isinstance(r, InvalidArgumentError) for r in results)
        assert await datastore.count_entries() == 0
        assert await datastore.list_all_entries() == []
        assert await datastore.last_change_event_id() == last
        # Nothing of the failed items lingers to collide with a later create.
        assert isinstance(
            await datastore.create_entry(_entry("/fed", "x:1", dns_names=("d.test",))),
            RegistrationEntry,
        )

    @pytest.mark.asyncio
    async def test_create_entries_empty_batch(self, datastore: DataStore) -> None:
        assert await datastore.create_entries([]) == []
        assert await datastore.create_entries_if_not_exist([]) == []
        assert await datastore.update_entries([]) == []
        assert await datastore.delete_entries([]) == []
        assert await datastore.last_change_event_id() == 0

    @pytest.mark.asyncio
    async def test_create_entries_are_seen_all_or_none(self, datastore: DataStore) -> None:
        items = [_entry(f"/w{i}", "a:1", "b:2") for i in range(60)]
        seen: set[int] = set()
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                seen.add(len(await datastore.list_all_entries()))
                seen.add(await datastore.count_entries())
                await asyncio.sleep(0)

        async def write() -> None:
            try:
                await datastore.create_entries(items)
            finally:
                done.set()

        await asyncio.gather(watch(), write())
        assert seen <= {0, 60}
        assert await datastore.count_entries() == 60

    @pytest.mark.asyncio
    async def test_create_entries_if_not_exist(self, datastore: DataStore) -> None:
        stored = await datastore.create_entry(_entry("/w", "a:1", "b:2"))
        last = await datastore.last_change_event_id()
        results = await datastore.create_entries_if_not_exist(
            [
                _entry("/w", "b:2", "a:1", hint="ignored"),
                _entry("/new", "a:1"),
                _entry("/new", "a:1", hint="ignored too"),
                replace(_entry("/bad"), selectors=()),
            ]
        )
        assert results[0] == (stored, True)
        assert isinstance(results[1], tuple)
        new, existed = results[1]
        assert not existed
        assert new.spiffe_id == _id("/new")
        assert results[2] == (new, True)
        assert isinstance(results[3], InvalidArgumentError)
        assert await datastore.count_entries() == 2
        events = await datastore.list_change_events(last)
        assert [e.object_id for e in events] == [new.id]

    @pytest.mark.asyncio
    async def test_update_entries_results_follow_the_items(self, datastore: DataStore) -> None:
        await self._bundles(datastore, FED_A)
        one = await datastore.create_entry(_entry("/one", "a:1"))
        two = await datastore.create_entry(_entry("/two", "b:2"))
        three = await datastore.create_entry(_entry("/two", "c:3", hint="third"))
        last = await datastore.last_change_event_id()
        mask = frozenset({"selectors", "hint", "federates_with"})
        results = await datastore.update_entries(
            [
                replace(one, hint="h1", dns_names=("ignored.test",)),
                replace(one, id="missing"),
                replace(two, selectors=_selectors("c:3")),
                replace(three, selectors=_selectors("d:4")),
                replace(two, selectors=_selectors("c:3"), hint="h2"),
                replace(one, federates_with=(FED_B,)),
                replace(three, selectors=()),
                replace(one, hint="again", federates_with=(FED_A,)),
            ],
            mask,
        )
        assert [type(r) for r in results] == [
            RegistrationEntry,
            NotFoundError,
            AlreadyExistsError,
            RegistrationEntry,
            RegistrationEntry,
            InvalidArgumentError,
            InvalidArgumentError,
            RegistrationEntry,
        ]
        assert results[0] == replace(one, hint="h1", revision_number=1)
        # The third entry moved off c:3 before the second entry moved onto it.
        assert results[3] == replace(three, selectors=_selectors("d:4"), revision_number=1)
        assert results[4] == replace(two, selectors=_selectors("c:3"), hint="h2", revision_number=1)
        # An entry named twice is updated on top of its first update.
        assert results[7] == replace(one, hint="again", federates_with=(FED_A,), revision_number=2)
        for updated in (results[3], results[4], results[7]):
            assert isinstance(updated, RegistrationEntry)
            assert await datastore.get_entry(updated.id) == updated
        events = await datastore.list_change_events(last)
        assert [e.object_id for e in events] == [one.id, three.id, two.id, one.id]

    @pytest.mark.asyncio
    async def test_update_entries_rejects_a_bad_mask_whole(self, datastore: DataStore) -> None:
        created = await datastore.create_entry(_entry("/w"))
        last = await datastore.last_change_event_id()
        with pytest.raises(InvalidArgumentError):
            await datastore.update_entries(
                [replace(created, hint="x")], frozenset({"hint", "no_such_field"})
            )
        assert await datastore.get_entry(created.id) == created
        assert await datastore.last_change_event_id() == last

    @pytest.mark.asyncio
    async def test_update_entries_without_mask_replaces_every_field(
        self, datastore: DataStore
    ) -> None:
        created = await datastore.create_entry(_entry("/w", dns_names=("a.test",)))
        [updated] = await datastore.update_entries(
            [_entry("/x", "k:v", id=created.id, dns_names=("b.test",), x509_svid_ttl=60)]
        )
        assert updated == replace(
            _entry("/x", "k:v", id=created.id, dns_names=("b.test",), x509_svid_ttl=60),
            created_at=created.created_at,
            revision_number=1,
        )
        assert await datastore.get_entry(created.id) == updated

    @pytest.mark.asyncio
    async def test_delete_entries(self, datastore: DataStore) -> None:
        one = await datastore.create_entry(_entry("/one", dns_names=("d.test",)))
        two = await datastore.create_entry(_entry("/two"))
        keep = await datastore.create_entry(_entry("/keep"))
        last = await datastore.last_change_event_id()
        results = await datastore.delete_entries([two.id, "missing", one.id, two.id, ""])
        assert results[0] == two
        assert isinstance(results[1], NotFoundError)
        assert results[2] == one
        assert isinstance(results[3], NotFoundError)
        assert isinstance(results[4], NotFoundError)
        assert await datastore.list_all_entries() == [keep]
        events = await datastore.list_change_events(last)
        assert [(e.kind, e.object_id) for e in events] == [
            (ChangeKind.ENTRY, two.id),
            (ChangeKind.ENTRY, one.id),
        ]
        # The deleted entries' lists are gone with them.
        again = await datastore.create_entry(_entry("/one", dns_names=("d.test",)))
        assert again.dns_names == ("d.test",)

    # -- attested nodes -------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_attested_node_round_trip(self, datastore: DataStore) -> None:
        node = _node(
            "n1",
            selectors=_selectors("test:zone:a", "test:rack:1"),
            banned=True,
            can_reattest=True,
            agent_version="1.2.3",
            new_x509_svid_serial_number="next",
            new_x509_svid_expires_at=datetime(2030, 1, 3, 4, 5, 6, 7, tzinfo=UTC),
        )
        assert await datastore.create_attested_node(node) == node
        assert await datastore.get_attested_node(node.spiffe_id) == node
        assert await datastore.get_node_selectors(node.spiffe_id) == node.selectors
        assert await datastore.get_attested_node(_id("/spire/agent/none")) is None
        with pytest.raises(AlreadyExistsError):
            await datastore.create_attested_node(replace(node, attestation_type="other"))

    @pytest.mark.asyncio
    async def test_node_selectors_can_precede_the_node(self, datastore: DataStore) -> None:
        node = _node("n1")
        await datastore.set_node_selectors(node.spiffe_id, _selectors("test:a", "test:b"))
        stored = await datastore.create_attested_node(node)
        assert stored.selectors == _selectors("test:a", "test:b")
        replaced = await datastore.create_attested_node(
            replace(_node("n2"), selectors=_selectors("test:x"))
        )
        assert replaced.selectors == _selectors("test:x")

    @pytest.mark.asyncio
    async def test_set_and_list_node_selectors(self, datastore: DataStore) -> None:
        one, two = _node("n1"), _node("n2")
        await datastore.create_attested_node(one)
        assert await datastore.get_node_selectors(one.spiffe_id) == ()
        await datastore.set_node_selectors(one.spiffe_id, _selectors("t:1", "t:2"))
        await datastore.set_node_selectors(two.spiffe_id, _selectors("t:3"))
        await datastore.set_node_selectors(one.spiffe_id, _selectors("t:4", "t:1"))
        assert await datastore.get_node_selectors(one.spiffe_id) == _selectors("t:4", "t:1")
        assert await datastore.list_all_node_selectors() == {
            one.spiffe_id: _selectors("t:4", "t:1"),
            two.spiffe_id: _selectors("t:3"),
        }
        node = await datastore.get_attested_node(one.spiffe_id)
        assert node is not None
        assert node.selectors == _selectors("t:4", "t:1")
        await datastore.set_node_selectors(two.spiffe_id, ())
        assert two.spiffe_id not in await datastore.list_all_node_selectors()

    @pytest.mark.asyncio
    async def test_list_attested_nodes_filters(self, datastore: DataStore) -> None:
        early = datetime(2030, 1, 1, 1, tzinfo=UTC)
        late = datetime(2030, 1, 1, 5, tzinfo=UTC)
        nodes = {
            "a": _node("a", attestation_type="join_token", x509_svid_expires_at=early),
            "b": _node("b", banned=True, x509_svid_expires_at=late),
            "c": _node("c", can_reattest=True, x509_svid_expires_at=None),
            "d": _node("d", x509_svid_expires_at=early, selectors=_selectors("t:1", "t:2")),
        }
        for node in nodes.values():
            await datastore.create_attested_node(node)
        by_id = {node.spiffe_id: name for name, node in nodes.items()}

        async def names(node_filter: NodeFilter) -> set[str]:
            page = await datastore.list_attested_nodes(node_filter)
            assert await datastore.count_attested_nodes(node_filter) == len(page.nodes)
            return {by_id[node.spiffe_id] for node in page.nodes}

        assert await names(NodeFilter()) == {"a", "b", "c", "d"}
        assert await names(NodeFilter(by_attestation_type="join_token")) == {"a"}
        assert await names(NodeFilter(by_attestation_type="test")) == {"b", "c", "d"}
        assert await names(NodeFilter(by_banned=True)) == {"b"}
        assert await names(NodeFilter(by_banned=False)) == {"a", "c", "d"}
        assert await names(NodeFilter(by_can_reattest=True)) == {"c"}
        assert await names(NodeFilter(by_can_reattest=False)) == {"a", "b", "d"}
        assert await names(NodeFilter(by_expires_before=datetime(2030, 1, 1, 2, tzinfo=UTC))) == {
            "a",
            "d",
        }
        assert await names(NodeFilter(by_expires_before=early)) == set()
        assert await names(NodeFilter(by_banned=False, by_expires_before=late)) == {"a", "d"}
        page = await datastore.list_attested_nodes(NodeFilter(by_attestation_type="join_token"))
        assert page.nodes == (nodes["a"],)

    @pytest.mark.parametrize(
        ("match", "expected"),
        [
            (MatchBehavior.EXACT, {"ab"}),
            (MatchBehavior.SUBSET, {"a", "ab"}),
            (MatchBehavior.SUPERSET, {"ab", "abc"}),
            (MatchBehavior.ANY, {"a", "ab", "abc", "bd"}),
        ],
    )
    @pytest.mark.asyncio
    async def test_list_attested_nodes_by_selectors(
        self, datastore: DataStore, match: MatchBehavior, expected: set[str]
    ) -> None:
        sets = {
            "none": (),
            "a": ("t:a",),
            "ab": ("t:a", "t:b"),
            "abc": ("t:a", "t:b", "t:c"),
            "bd": ("t:b", "t:d"),
            "c": ("t:c",),
        }
        by_id: dict[SpiffeId, str] = {}
        for name, selectors in sets.items():
            node = await datastore.create_attested_node(
                _node(name, selectors=_selectors(*selectors))
            )
            by_id[node.spiffe_id] = name
        node_filter = NodeFilter(by_selectors=SelectorMatch(_selectors("t:a", "t:b"), match))
        page = await datastore.list_attested_nodes(node_filter)
        assert {by_id[node.spiffe_id] for node in page.nodes} == expected
        assert await datastore.count_attested_nodes(node_filter) == len(expected)

    @pytest.mark.asyncio
    async def test_list_attested_nodes_pages(self, datastore: DataStore) -> None:
        created = [
            await datastore.create_attested_node(_node(f"n{i:02}", selectors=_selectors(f"t:{i}")))
            for i in range(23)
        ]
        found: list[AttestedNode] = []
        token = ""
        while True:
            page = await datastore.list_attested_nodes(None, Page(5, token))
            assert len(page.nodes) <= 5
            found.extend(page.nodes)
            token = page.next_page_token
            if not token:
                break
        assert found == created
        for bad in _BAD_PAGE_TOKENS:
            with pytest.raises(InvalidArgumentError):
                await datastore.list_attested_nodes(None, Page(5, bad))

    @pytest.mark.asyncio
    async def test_update_attested_node(self, datastore: DataStore) -> None:
        node = await datastore.create_attested_node(_node("n1", selectors=_selectors("t:1")))
        change = _node(
            "n1",
            attestation_type="ignored",
            x509_svid_serial_number="renewed",
            x509_svid_expires_at=datetime(2030, 2, 1, tzinfo=UTC),
            selectors=_selectors("t:9"),
            agent_version="2.0",
        )
        mask = frozenset({"x509_svid_serial_number", "x509_svid_expires_at", "agent_version"})
        updated = await datastore.update_attested_node(change, mask)
        assert updated == replace(
            node,
            x509_svid_serial_number="renewed",
            x509_svid_expires_at=datetime(2030, 2, 1, tzinfo=UTC),
            agent_version="2.0",
        )
        assert await datastore.get_attested_node(node.spiffe_id) == updated
        everything = await datastore.update_attested_node(change)
        assert everything == change
        assert await datastore.get_node_selectors(node.spiffe_id) == _selectors("t:9")
        with pytest.raises(NotFoundError):
            await datastore.update_attested_node(_node("missing"))
        with pytest.raises(InvalidArgumentError):
            await datastore.update_attested_node(change, frozenset({"spiffe_id"}))

    @pytest.mark.asyncio
    async def test_delete_attested_node(self, datastore: DataStore) -> None:
        node = await datastore.create_attested_node(_node("n1", selectors=_selectors("t:1")))
        assert await datastore.delete_attested_node(node.spiffe_id) == node
        assert await datastore.get_attested_node(node.spiffe_id) is None
        assert await datastore.get_node_selectors(node.spiffe_id) == ()
        assert await datastore.count_attested_nodes() == 0
        with pytest.raises(NotFoundError):
            await datastore.delete_attested_node(node.spiffe_id)

    # -- join tokens ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_join_tokens(self, datastore: DataStore) -> None:
        token = JoinToken("secret-1", datetime(2030, 1, 1, 0, 10, 0, 5, tzinfo=UTC))
        assert await datastore.create_join_token(token) == token
        assert await datastore.fetch_join_token("secret-1") == token
        assert await datastore.fetch_join_token("other") is None
        with pytest.raises(AlreadyExistsError):
            await datastore.create_join_token(token)
        with pytest.raises(InvalidArgumentError):
            await datastore.create_join_token(JoinToken("", token.expires_at))
        await datastore.delete_join_token("secret-1")
        assert await datastore.fetch_join_token("secret-1") is None
        with pytest.raises(NotFoundError):
            await datastore.delete_join_token("secret-1")

    @pytest.mark.asyncio
    async def test_consume_join_token_once(self, datastore: DataStore) -> None:
        token = JoinToken("secret", datetime(2030, 1, 2, tzinfo=UTC))
        await datastore.create_join_token(token)
        assert await datastore.consume_join_token("secret") == token
        with pytest.raises(NotFoundError):
            await datastore.consume_join_token("secret")
        assert await datastore.fetch_join_token("secret") is None

    @pytest.mark.asyncio
    async def test_consume_join_token_has_one_winner_under_concurrency(
        self, datastore: DataStore
    ) -> None:
        await datastore.create_join_token(JoinToken("race", datetime(2030, 1, 2, tzinfo=UTC)))
        results = await asyncio.gather(
            *(datastore.consume_join_token("race") for _ in range(25)), return_exceptions=True
        )
        winners = [result for result in results if isinstance(result, JoinToken)]
        losers = [result for result in results if isinstance(result, NotFoundError)]
        assert len(winners) == 1
        assert len(losers) == 24

    @pytest.mark.asyncio
    async def test_prune_join_tokens(self, datastore: DataStore) -> None:
        cut = datetime(2030, 1, 1, 12, tzinfo=UTC)
        await datastore.create_join_token(JoinToken("old", cut - timedelta(microseconds=1)))
        await datastore.create_join_token(JoinToken("edge", cut))
        await datastore.create_join_token(JoinToken("new", cut + timedelta(hours=1)))
        assert await datastore.prune_join_tokens(cut) == 1
        assert await datastore.fetch_join_token("old") is None
        assert await datastore.fetch_join_token("edge") is not None
        assert await datastore.fetch_join_token("new") is not None

    # -- bundles ----------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_bundle_round_trip(self, datastore: DataStore) -> None:
        bundle = Bundle(
            trust_domain=TD,
            x509_authorities=(
                X509Authority(_certificate("ca-1", datetime(2031, 1, 1, tzinfo=UTC))),
                X509Authority(b"\x30\x03\x02\x01\x01", tainted=True),
            ),
            jwt_authorities=(
                JwtAuthority("kid-1", b"pk-1", datetime(2030, 3, 1, 1, 2, 3, 4, tzinfo=UTC)),
                JwtAuthority("kid-2", b"pk-2", None, tainted=True),
            ),
            sequence_number=42,
            refresh_hint=300,
        )
        assert await datastore.create_bundle(bundle) == bundle
        assert await datastore.get_bundle(TD) == bundle
        assert await datastore.get_bundle(FED_A) is None
        with pytest.raises(AlreadyExistsError):
            await datastore.create_bundle(bundle)
        assert await datastore.count_bundles() == 1

    @pytest.mark.asyncio
    async def test_set_bundle_creates_and_replaces(self, datastore: DataStore) -> None:
        first = Bundle(trust_domain=FED_A, jwt_authorities=(JwtAuthority("k1", b"1"),))
        assert await datastore.set_bundle(first) == first
        second = Bundle(trust_domain=FED_A, x509_authorities=(X509Authority(b"der"),))
        assert await datastore.set_bundle(second) == second
        assert await datastore.get_bundle(FED_A) == second
        assert await datastore.count_bundles() == 1

    @pytest.mark.asyncio
    async def test_list_bundles_in_pages(self, datastore: DataStore) -> None:
        domains = [TrustDomain(f"td{i:02}.test") for i in range(11)]
        for trust_domain in reversed(domains):
            await datastore.create_bundle(Bundle(trust_domain=trust_domain))
        found: list[TrustDomain] = []
        token = ""
        while True:
            page = await datastore.list_bundles(Page(3, token))
            assert len(page.bundles) <= 3
            found.extend(bundle.trust_domain for bundle in page.bundles)
            token = page.next_page_token
            if not token:
                break
        assert found == domains
        assert [b.trust_domain for b in (await datastore.list_bundles()).bundles] == domains
        assert await datastore.count_bundles() == 11

    @pytest.mark.asyncio
    async def test_update_bundle_reads_and_writes_in_one_step(self, datastore: DataStore) -> None:
        seen: list[Bundle | None] = []

        def bump(current: Bundle | None) -> Bundle:
            seen.append(current)
            base = current or Bundle(trust_domain=TD)
            return replace(base, sequence_number=base.sequence_number + 1)

        created = await datastore.update_bundle(TD, bump)
        assert seen == [None]
        assert created.sequence_number == 1
        await asyncio.gather(*(datastore.update_bundle(TD, bump) for _ in range(15)))
        stored = await datastore.get_bundle(TD)
        assert stored is not None
        assert stored.sequence_number == 16

    @pytest.mark.asyncio
    async def test_update_bundle_failure_changes_nothing(self, datastore: DataStore) -> None:
        bundle = Bundle(trust_domain=TD, sequence_number=3)
        await datastore.create_bundle(bundle)

        def fail(current: Bundle | None) -> Bundle:
            raise RuntimeError("mutation failed")

        with pytest.raises(RuntimeError):
            await datastore.update_bundle(TD, fail)
        with pytest.raises(InvalidArgumentError):
            await datastore.update_bundle(TD, lambda current: Bundle(trust_domain=FED_A))
        assert await datastore.get_bundle(TD) == bundle
        assert await datastore.get_bundle(FED_A) is None

    @pytest.mark.asyncio
    async def test_append_bundle(self, datastore: DataStore) -> None:
        ca1, ca2 = X509Authority(b"ca-1"), X509Authority(b"ca-2")
        k1, k2 = JwtAuthority("k1", b"1"), JwtAuthority("k2", b"2")
        start = Bundle(trust_domain=TD, x509_authorities=(ca1,), jwt_authorities=(k1,))
        assert await datastore.append_bundle(start) == start
        same = await datastore.append_bundle(
            Bundle(trust_domain=TD, x509_authorities=(ca1,), jwt_authorities=(k1,))
        )
        assert same == start
        grown = await datastore.append_bundle(
            Bundle(
                trust_domain=TD,
                x509_authorities=(ca1, ca2),
                jwt_authorities=(JwtAuthority("k1", b"other key, same id"), k2),
            )
        )
        assert grown == Bundle(
            trust_domain=TD,
            x509_authorities=(ca1, ca2),
            jwt_authorities=(k1, k2),
            sequence_number=1,
        )
        assert await datastore.get_bundle(TD) == grown

    @pytest.mark.asyncio
    async def test_delete_bundle_restrict(self, datastore: DataStore) -> None:
        await self._bundles(datastore, FED_A)
        entry = await datastore.create_entry(_entry("/w", federates_with=(FED_A,)))
        with pytest.raises(FailedPreconditionError):
            await datastore.delete_bundle(FED_A, BundleDeleteMode.RESTRICT)
        assert await datastore.get_bundle(FED_A) is not None
        assert await datastore.get_entry(entry.id) == entry
        await datastore.delete_entry(entry.id)
        await datastore.delete_bundle(FED_A)
        assert await datastore.get_bundle(FED_A) is None
        with pytest.raises(NotFoundError):
            await datastore.delete_bundle(FED_A)

    @pytest.mark.asyncio
    async def test_delete_bundle_delete_mode(self, datastore: DataStore) -> None:
        await self._bundles(datastore, FED_A, FED_B)
        gone = await datastore.create_entry(_entry("/gone", federates_with=(FED_A, FED_B)))
        kept = await datastore.create_entry(_entry("/kept", federates_with=(FED_B,)))
        plain = await datastore.create_entry(_entry("/plain"))
        last = await datastore.last_change_event_id()
        await datastore.delete_bundle(FED_A, BundleDeleteMode.DELETE)
        assert await datastore.get_bundle(FED_A) is None
        assert _ids(await datastore.list_all_entries()) == {kept.id, plain.id}
        events = await datastore.list_change_events(last)
        assert [(e.kind, e.object_id) for e in events] == [(ChangeKind.ENTRY, gone.id)]

    @pytest.mark.asyncio
    async def test_delete_bundle_dissociate_mode(self, datastore: DataStore) -> None:
        await self._bundles(datastore, FED_A, FED_B)
        both = await datastore.create_entry(_entry("/both", federates_with=(FED_A, FED_B)))
        only = await datastore.create_entry(_entry("/only", federates_with=(FED_A,)))
        last = await datastore.last_change_event_id()
        await datastore.delete_bundle(FED_A, BundleDeleteMode.DISSOCIATE)
        assert await datastore.get_bundle(FED_A) is None
        assert await datastore.get_entry(both.id) == replace(
            both, federates_with=(FED_B,), revision_number=1
        )
        assert await datastore.get_entry(only.id) == replace(
            only, federates_with=(), revision_number=1
        )
        events = await datastore.list_change_events(last)
        assert {e.object_id for e in events} == {both.id, only.id}
        assert (
            await datastore.count_entries(
                EntryFilter(by_federates_with=FederatesWithMatch((FED_A,), MatchBehavior.ANY))
            )
            == 0
        )

    @pytest.mark.asyncio
    async def test_prune_bundle(self, datastore: DataStore) -> None:
        cut = datetime(2030, 6, 1, tzinfo=UTC)
        old_ca = X509Authority(_certificate("old", cut - timedelta(seconds=1)))
        new_ca = X509Authority(_certificate("new", cut + timedelta(days=1)))
        old_key = JwtAuthority("old", b"o", cut - timedelta(seconds=1))
        new_key = JwtAuthority("new", b"n", cut + timedelta(days=1))
        forever = JwtAuthority("forever", b"f", None)
        bundle = Bundle(
            trust_domain=TD,
            x509_authorities=(old_ca, new_ca),
            jwt_authorities=(old_key, new_key, forever),
            sequence_number=5,
        )
        await datastore.create_bundle(bundle)
        assert await datastore.prune_bundle(TD, cut) is True
        assert await datastore.get_bundle(TD) == replace(
            bundle,
            x509_authorities=(new_ca,),
            jwt_authorities=(new_key, forever),
            sequence_number=6,
        )
        assert await datastore.prune_bundle(TD, cut) is False
        assert await datastore.prune_bundle(FED_A, cut) is False

    @pytest.mark.asyncio
    async def test_prune_bundle_never_empties_a_bundle(self, datastore: DataStore) -> None:
        cut = datetime(2030, 6, 1, tzinfo=UTC)
        bundle = Bundle(
            trust_domain=TD,
            x509_authorities=(X509Authority(_certificate("old", cut - timedelta(days=1))),),
            jwt_authorities=(JwtAuthority("old", b"o", cut - timedelta(days=1)),),
        )
        await datastore.create_bundle(bundle)
        with pytest.raises(FailedPreconditionError):
            await datastore.prune_bundle(TD, cut)
        assert await datastore.get_bundle(TD) == bundle

    # -- CA journal -------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_ca_journal(self, datastore: DataStore) -> None:
        assert await datastore.get_ca_journal("server") is None
        await datastore.set_ca_journal("server", b"\x00first\xff")
        assert await datastore.get_ca_journal("server") == b"\x00first\xff"
        await datastore.set_ca_journal("server", b"second")
        await datastore.set_ca_journal("other", b"")
        assert await datastore.get_ca_journal("server") == b"second"
        assert await datastore.get_ca_journal("other") == b""

    # -- federation relationships --------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_federation_relationships(self, datastore: DataStore) -> None:
        web = FederationRelationship(
            trust_domain=FED_A,
            bundle_endpoint_url="https://a.test/bundle",
            profile=FederationProfile.HTTPS_WEB,
        )
        spiffe = FederationRelationship(
            trust_domain=FED_B,
            bundle_endpoint_url="https://b.test:8443",
            profile=FederationProfile.HTTPS_SPIFFE,
            endpoint_spiffe_id=SpiffeId.parse("spiffe://b.test/spire/server"),
        )
        assert await datastore.create_federation_relationship(spiffe) == spiffe
        assert await datastore.create_federation_relationship(web) == web
        assert await datastore.get_federation_relationship(FED_A) == web
        assert await datastore.get_federation_relationship(FED_B) == spiffe
        assert await datastore.get_federation_relationship(FED_C) is None
        with pytest.raises(AlreadyExistsError):
            await datastore.create_federation_relationship(web)
        first = await datastore.list_federation_relationships(Page(1))
        assert first.relationships == (web,)
        second = await datastore.list_federation_relationships(Page(1, first.next_page_token))
        assert second.relationships == (spiffe,)
        assert second.next_page_token == ""
        assert (await datastore.list_federation_relationships()).relationships == (web, spiffe)

    @pytest.mark.asyncio
    async def test_update_and_delete_federation_relationship(self, datastore: DataStore) -> None:
        web = FederationRelationship(
            trust_domain=FED_A,
            bundle_endpoint_url="https://a.test/bundle",
            profile=FederationProfile.HTTPS_WEB,
        )
        await datastore.create_federation_relationship(web)
        change = FederationRelationship(
            trust_domain=FED_A,
            bundle_endpoint_url="https://a.test/new",
            profile=FederationProfile.HTTPS_SPIFFE,
            endpoint_spiffe_id=SpiffeId.parse("spiffe://a.test/server"),
        )
        url_only = await datastore.update_federation_relationship(
            change, frozenset({"bundle_endpoint_url"})
        )
        assert url_only == replace(web, bundle_endpoint_url="https://a.test/new")
        assert await datastore.update_federation_relationship(change) == change
        assert await datastore.get_federation_relationship(FED_A) == change
        with pytest.raises(InvalidArgumentError):
            await datastore.update_federation_relationship(change, frozenset({"trust_domain"}))
        with pytest.raises(NotFoundError):
            await datastore.update_federation_relationship(replace(change, trust_domain=FED_B))
        await self._bundles(datastore, FED_A)
        await datastore.delete_federation_relationship(FED_A)
        assert await datastore.get_federation_relationship(FED_A) is None
        assert await datastore.get_bundle(FED_A) is not None
        with pytest.raises(NotFoundError):
            await datastore.delete_federation_relationship(FED_A)

    # -- change feed ------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_change_events_follow_every_change(
        self, datastore: DataStore, fake_clock: FakeClock
    ) -> None:
        assert await datastore.last_change_event_id() == 0
        assert await datastore.list_change_events() == []
        entry = await datastore.create_entry(_entry("/w"))
        await fake_clock.advance(1)
        await datastore.update_entry(entry, frozenset({"hint"}))
        node = await datastore.create_attested_node(_node("n1"))
        await datastore.set_node_selectors(node.spiffe_id, _selectors("t:1"))
        await datastore.update_attested_node(node, frozenset({"agent_version"}))
        await datastore.delete_attested_node(node.spiffe_id)
        await datastore.delete_entry(entry.id)
        events = await datastore.list_change_events()
        node_id = str(node.spiffe_id)
        assert [(e.kind, e.object_id) for e in events] == [
            (ChangeKind.ENTRY, entry.id),
            (ChangeKind.ENTRY, entry.id),
            (ChangeKind.NODE, node_id),
            (ChangeKind.NODE, node_id),
            (ChangeKind.NODE, node_id),
            (ChangeKind.NODE, node_id),
            (ChangeKind.ENTRY, entry.id),
        ]
        ids = [e.event_id for e in events]
        assert ids == sorted(set(ids))
        assert await datastore.last_change_event_id() == ids[-1]
        assert events[0].created_at == datetime(2030, 1, 1, tzinfo=UTC)
        assert events[1].created_at == fake_clock.now()
        assert await datastore.list_change_events(ids[2]) == events[3:]
        assert await datastore.list_change_events(ids[2], limit=2) == events[3:5]
        assert await datastore.list_change_events(ids[-1]) == []

    @pytest.mark.asyncio
    async def test_reads_and_failures_write_no_events(self, datastore: DataStore) -> None:
        entry = await datastore.create_entry(_entry("/w"))
        last = await datastore.last_change_event_id()
        await datastore.get_entry(entry.id)
        await datastore.list_entries()
        await datastore.list_all_entries()
        with pytest.raises(AlreadyExistsError):
            await datastore.create_entry(_entry("/w"))
        with pytest.raises(NotFoundError):
            await datastore.delete_entry("missing")
        with pytest.raises(NotFoundError):
            await datastore.delete_attested_node(_id("/spire/agent/none"))
        assert await datastore.last_change_event_id() == last
        assert await datastore.list_change_events(last) == []

    @pytest.mark.asyncio
    async def test_prune_change_events(self, datastore: DataStore, fake_clock: FakeClock) -> None:
        await datastore.create_entry(_entry("/w1"))
        await datastore.create_entry(_entry("/w2"))
        await fake_clock.advance(3600)
        third = await datastore.create_entry(_entry("/w3"))
        last = await datastore.last_change_event_id()
        assert await datastore.prune_change_events(fake_clock.now()) == 2
        remaining = await datastore.list_change_events()
        assert [e.object_id for e in remaining] == [third.id]
        assert await datastore.prune_change_events(fake_clock.now() + timedelta(seconds=1)) == 1
        assert await datastore.list_change_events() == []
        assert await datastore.last_change_event_id() == last
        await datastore.create_entry(_entry("/w4"))
        assert await datastore.last_change_event_id() > last

    # -- copying (optional: CopyableDataStore) ----------------------------------------------------

    @pytest.mark.asyncio
    async def test_restore_entries_keeps_every_field(
        self, datastore: DataStore, fake_clock: FakeClock
    ) -> None:
        if not isinstance(datastore, CopyableDataStore):
            pytest.skip("the datastore does not offer CopyableDataStore")
        await self._bundles(datastore, FED_A)
        moment = datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
        full = _entry(
            "/restored",
            "k8s:ns:prod",
            "unix:uid:0",
            id="restored-1",
            created_at=moment,
            revision_number=7,
            x509_svid_ttl=60,
            federates_with=(FED_A,),
            dns_names=("a.test",),
            expires_at=moment + timedelta(days=3000),
            hint="h",
            admin=True,
            store_svid=True,
        )
        plain = _entry("/plain", id="restored-2", created_at=moment, revision_number=2)
        before = await datastore.last_change_event_id()
        await datastore.restore_entries([full, plain])
        assert await datastore.get_entry("restored-1") == full
        assert await datastore.list_all_entries() == [full, plain]
        changed = replace(full, hint="again", revision_number=9)
        await datastore.restore_entries([changed])
        assert await datastore.get_entry("restored-1") == changed
        assert await datastore.count_entries() == 2
        events = await datastore.list_change_events(before)
        assert [e.object_id for e in events] == ["restored-1", "restored-2", "restored-1"]
        with pytest.raises(InvalidArgumentError):
            await datastore.restore_entries([replace(plain, id="x", federates_with=(FED_B,))])
        with pytest.raises(InvalidArgumentError):
            await datastore.restore_entries([replace(plain, created_at=None)])
        assert await datastore.count_entries() == 2

    @pytest.mark.asyncio
    async def test_list_join_tokens(self, datastore: DataStore, fake_clock: FakeClock) -> None:
        if not isinstance(datastore, CopyableDataStore):
            pytest.skip("the datastore does not offer CopyableDataStore")
        assert await datastore.list_join_tokens() == []
        later = fake_clock.now() + timedelta(minutes=5)
        for value in ("b-token", "a-token", "B-token"):
            await datastore.create_join_token(JoinToken(value, later))
        await datastore.consume_join_token("b-token")
        assert await datastore.list_join_tokens() == [
            JoinToken("B-token", later),
            JoinToken("a-token", later),
        ]

    # -- consistency ------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_reads_during_writes_see_whole_entries(self, datastore: DataStore) -> None:
        selectors = tuple(f"t:{i}" for i in range(20))

        async def write() -> None:
            for i in range(15):
                await datastore.create_entry(_entry(f"/w{i}", *selectors))

        async def read() -> None:
            for _ in range(15):
                for entry in await datastore.list_all_entries():
                    assert len(entry.selectors) == 20
                for entry in (await datastore.list_entries()).entries:
                    assert len(entry.selectors) == 20
                await asyncio.sleep(0)

        await asyncio.gather(write(), read(), read())
        assert await datastore.count_entries() == 15

    # -- change signals (optional: WatchableDataStore) --------------------------------------------

    @pytest.mark.asyncio
    async def test_watch_signals_entry_node_and_bundle_writes(
        self, datastore: DataStore, fake_clock: FakeClock
    ) -> None:
        if not isinstance(datastore, WatchableDataStore):
            pytest.skip("the datastore does not offer WatchableDataStore")
        signals: list[ChangeSignal] = []
        watch = asyncio.create_task(datastore.watch_changes(signals.append))
        try:
            await _signalled(signals, 1, fake_clock)  # once established
            writes = (
                lambda: datastore.create_entry(_entry("/watched")),
                lambda: datastore.set_node_selectors(PARENT, _selectors("k8s:ns:a")),
                lambda: datastore.set_bundle(
                    Bundle(FED_A, jwt_authorities=(JwtAuthority("k", b"key"),))
                ),
            )
            for write in writes:
                seen = len(signals)
                await write()
                await _signalled(signals, seen + 1, fake_clock)
            assert set(signals) == {ChangeSignal.CHANGED}  # nothing was lost: no resync
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


async def _signalled(signals: list[ChangeSignal], count: int, clock: FakeClock) -> None:
    """Wait in real time, at most 10 s, until ``signals`` holds ``count`` signals, moving
    ``clock`` 100 ms every 10 ms meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while len(signals) < count:
        assert loop.time() < deadline, f"{count} change signals expected, got {signals}"
        await clock.advance(timedelta(milliseconds=100))
        await asyncio.sleep(0.01)
