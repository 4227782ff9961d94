"""The contract every SVID store keeps, as tests a plugin's test module inherits.

An SVID store writes to a place the agent does not read (a secret manager, a vault), and
SPIRE's stores need no permission to read back. The suite therefore reads what was stored
through the test's own eyes: subclass :class:`SvidStoreContract` and provide four fixtures:

- ``svid_store``: an instance configured with ``host_services`` and closed after the test;
- ``svid_store_name``: the name the plugin is registered under (the selector type);
- ``fresh_metadata``: a function returning, at each call, metadata that addresses a place
  nothing was stored at yet (``("secretname:test-<random>",)``);
- ``read_stored``: an async function reading the place ``metadata`` addresses the way a
  workload would, and returning a :class:`ReadBack`, or ``None`` when nothing is stored
  there (never stored, or deleted; a secret scheduled for deletion counts as deleted)::

    class TestMyStore(SvidStoreContract):
        @pytest_asyncio.fixture
        async def svid_store(self, host_services):
            store = MyStore()
            await store.configure(MyConfig(...), host_services)
            yield store
            await store.close()

        @pytest.fixture
        def svid_store_name(self):
            return "my_store"

        @pytest.fixture
        def fresh_metadata(self):
            return lambda: (f"name:{secrets.token_hex(8)}",)

        @pytest.fixture
        def read_stored(self, backend):
            async def read(metadata):
                ...
            return read

``invalid_metadata`` lists metadata the store must refuse with
:class:`~pyspire_sdk.errors.InvalidArgumentError` on put and on delete; it defaults to
empty metadata (no place at all), and a plugin adds what its own keys rule out.

What is checked: a put is read back whole (SPIFFE ID, chain in order, PKCS#8 key, bundle and
every federated bundle); putting twice is harmless; a rotated SVID replaces the stored one; a
delete removes it, and deleting again or deleting what was never stored succeeds; a put after a
delete stores again; places are independent, also when written concurrently; the private key
appears in no log event of a put or a delete.
"""

from __future__ import annotations

__all__ = ["ReadBack", "SvidStoreContract", "make_stored_svid"]

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from pyspire_sdk.errors import InvalidArgumentError
from pyspire_sdk.plugins.svid_store import StoredSvid, SvidStore
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing.pki import TestAuthority

TRUST_DOMAIN = TrustDomain("example.org")
FEDERATED_TRUST_DOMAINS = (TrustDomain("federated.example"), TrustDomain("partner.example"))


@dataclass(frozen=True)
class ReadBack:
    """What a reader of the store finds at one place, decoded to the agent's terms: DER
    certificates (leaf first), the PKCS#8 DER key, the bundle's DER roots and those of each
    federated trust domain."""

    spiffe_id: SpiffeId
    cert_chain: tuple[bytes, ...]
    private_key: bytes = field(repr=False)
    bundle: tuple[bytes, ...]
    federated_bundles: Mapping[TrustDomain, tuple[bytes, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, svid: StoredSvid) -> ReadBack:
        """What reading ``svid`` back must give."""
        return cls(
            spiffe_id=svid.spiffe_id,
            cert_chain=svid.cert_chain,
            private_key=svid.private_key,
            bundle=svid.bundle,
            federated_bundles=dict(svid.federated_bundles),
        )


def make_stored_svid(
    metadata: tuple[str, ...],
    *,
    path: str = "/workload",
    authority: TestAuthority | None = None,
    federated: Sequence[TestAuthority] = (),
) -> StoredSvid:
    """A stored SVID of ``spiffe://example.org<path>`` with a fresh key, its authority's root
    as the bundle and the roots of ``federated`` as federated bundles."""
    issuer = authority if authority is not None else TestAuthority(TRUST_DOMAIN)
    issued = issuer.issue(SpiffeId.parse(f"spiffe://{issuer.trust_domain.name}{path}"))
    assert issued.private_key is not None
    return StoredSvid(
        spiffe_id=issued.spiffe_id,
        cert_chain=issued.cert_chain,
        private_key=issued.private_key,
        bundle=(issuer.der,),
        expires_at=issued.expires_at,
        metadata=metadata,
        federated_bundles={other.trust_domain: (other.der,) for other in federated},
    )


Reader = Callable[[tuple[str, ...]], Awaitable[ReadBack | None]]


def _key_forms(private_key: bytes) -> list[str]:
    """The ways a key could show in a log line: its DER as text, base64 and hex."""
    encoded = base64.b64encode(private_key).decode("ascii")
    return [encoded[:40], private_key.hex()[:40], repr(private_key)[:40]]


class SvidStoreContract:
    """Tests every SVID store must pass. The subclass provides the fixtures listed above."""

    @pytest.fixture
    def svid_store(self) -> SvidStore:
        """A configured SVID store; the subclass must override this."""
        pytest.fail("an SvidStoreContract subclass must provide the 'svid_store' fixture")

    @pytest.fixture
    def svid_store_name(self) -> str:
        """The plugin's registered name; the subclass must override this."""
        pytest.fail("an SvidStoreContract subclass must provide the 'svid_store_name' fixture")

    @pytest.fixture
    def fresh_metadata(self) -> Callable[[], tuple[str, ...]]:
        """Metadata of a new, unused place at each call; the subclass must override this."""
        pytest.fail("an SvidStoreContract subclass must provide the 'fresh_metadata' fixture")

    @pytest.fixture
    def read_stored(self) -> Reader:
        """Reads a place as a workload would; the subclass must override this."""
        pytest.fail("an SvidStoreContract subclass must provide the 'read_stored' fixture")

    @pytest.fixture
    def invalid_metadata(self) -> list[tuple[str, ...]]:
        """Metadata the store must refuse; a subclass adds what its keys rule out."""
        return [()]

    @pytest.fixture
    def authorities(self) -> tuple[TestAuthority, list[TestAuthority]]:
        """Our trust domain's CA and two federated ones."""
        return TestAuthority(TRUST_DOMAIN), [TestAuthority(td) for td in FEDERATED_TRUST_DOMAINS]

    def _svid(
        self,
        metadata: tuple[str, ...],
        authorities: tuple[TestAuthority, list[TestAuthority]],
        path: str = "/workload",
    ) -> StoredSvid:
        ours, federated = authorities
        return make_stored_svid(metadata, path=path, authority=ours, federated=federated)

    @pytest.mark.asyncio
    async def test_a_put_is_read_back_whole(
        self,
        svid_store: SvidStore,
        svid_store_name: str,
        fresh_metadata: Callable[[], tuple[str, ...]],
        read_stored: Reader,
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        assert svid_store_name, "the registered name is empty"
        svid = self._svid(fresh_metadata(), authorities)
        await svid_store.put_x509_svid(svid)
        assert await read_stored(svid.metadata) == ReadBack.of(svid)

    @pytest.mark.asyncio
    async def test_without_federation_no_federated_bundles_are_read(
        self,
        svid_store: SvidStore,
        fresh_metadata: Callable[[], tuple[str, ...]],
        read_stored: Reader,
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        svid = make_stored_svid(fresh_metadata(), authority=authorities[0])
        await svid_store.put_x509_svid(svid)
        assert await read_stored(svid.metadata) == ReadBack.of(svid)

    @pytest.mark.asyncio
    async def test_putting_twice_is_harmless(
        self,
        svid_store: SvidStore,
        fresh_metadata: Callable[[], tuple[str, ...]],
        read_stored: Reader,
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        svid = self._svid(fresh_metadata(), authorities)
        await svid_store.put_x509_svid(svid)
        await svid_store.put_x509_svid(svid)
        assert await read_stored(svid.metadata) == ReadBack.of(svid)

    @pytest.mark.asyncio
    async def test_a_rotated_svid_replaces_the_stored_one(
        self,
        svid_store: SvidStore,
        fresh_metadata: Callable[[], tuple[str, ...]],
        read_stored: Reader,
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        metadata = fresh_metadata()
        await svid_store.put_x509_svid(self._svid(metadata, authorities))
        rotated = self._svid(metadata, authorities, path="/workload/rotated")
        await svid_store.put_x509_svid(rotated)
        assert await read_stored(metadata) == ReadBack.of(rotated)

    @pytest.mark.asyncio
    async def test_a_delete_removes_and_may_be_repeated(
        self,
        svid_store: SvidStore,
        fresh_metadata: Callable[[], tuple[str, ...]],
        read_stored: Reader,
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        svid = self._svid(fresh_metadata(), authorities)
        await svid_store.put_x509_svid(svid)
        await svid_store.delete_x509_svid(svid.metadata)
        assert await read_stored(svid.metadata) is None
        await svid_store.delete_x509_svid(svid.metadata)
        assert await read_stored(svid.metadata) is None

    @pytest.mark.asyncio
    async def test_deleting_what_was_never_stored_succeeds(
        self, svid_store: SvidStore, fresh_metadata: Callable[[], tuple[str, ...]]
    ) -> None:
        await svid_store.delete_x509_svid(fresh_metadata())

    @pytest.mark.asyncio
    async def test_a_put_after_a_delete_stores_again(
        self,
        svid_store: SvidStore,
        fresh_metadata: Callable[[], tuple[str, ...]],
        read_stored: Reader,
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        metadata = fresh_metadata()
        await svid_store.put_x509_svid(self._svid(metadata, authorities))
        await svid_store.delete_x509_svid(metadata)
        again = self._svid(metadata, authorities, path="/workload/again")
        await svid_store.put_x509_svid(again)
        assert await read_stored(metadata) == ReadBack.of(again)

    @pytest.mark.asyncio
    async def test_places_are_independent_also_when_written_concurrently(
        self,
        svid_store: SvidStore,
        fresh_metadata: Callable[[], tuple[str, ...]],
        read_stored: Reader,
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        svids = [self._svid(fresh_metadata(), authorities, path=f"/w{index}") for index in range(3)]
        await asyncio.gather(*(svid_store.put_x509_svid(svid) for svid in svids))
        await svid_store.delete_x509_svid(svids[0].metadata)
        assert await read_stored(svids[0].metadata) is None
        for svid in svids[1:]:
            assert await read_stored(svid.metadata) == ReadBack.of(svid)

    @pytest.mark.asyncio
    async def test_metadata_the_store_cannot_use_is_an_invalid_argument(
        self,
        svid_store: SvidStore,
        invalid_metadata: list[tuple[str, ...]],
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        for metadata in invalid_metadata:
            with pytest.raises(InvalidArgumentError):
                await svid_store.put_x509_svid(self._svid(metadata, authorities))
            with pytest.raises(InvalidArgumentError):
                await svid_store.delete_x509_svid(metadata)

    @pytest.mark.asyncio
    async def test_the_private_key_is_never_logged(
        self,
        svid_store: SvidStore,
        fresh_metadata: Callable[[], tuple[str, ...]],
        authorities: tuple[TestAuthority, list[TestAuthority]],
    ) -> None:
        svid = self._svid(fresh_metadata(), authorities)
        with capture_logs() as events:
            await svid_store.put_x509_svid(svid)
            await svid_store.put_x509_svid(svid)
            await svid_store.delete_x509_svid(svid.metadata)
        logged = "\n".join(repr(event) for event in events)
        for form in _key_forms(svid.private_key):
            assert form not in logged, "the private key appears in a log event"
        assert "PRIVATE KEY" not in logged, "a PEM private key appears in a log event"
