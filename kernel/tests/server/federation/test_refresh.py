"""Federated bundles fetched from real HTTPS bundle endpoints on loopback, on the fake clock:
stored on success, refreshed on the served hint, and refused (the stored bundle kept, the
fetch retried by the backoff policy) when the endpoint is not who it should be or the bundle
fails the standard's checks."""

from __future__ import annotations

import contextlib
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives.serialization import load_der_private_key

from pyspire.config import SERVER_SCHEMA, load_document
from pyspire.server.federation.endpoint import BundleEndpoint
from pyspire.server.federation.endpoint_tls import EndpointTls
from pyspire.server.federation.fetch import BundleFetcher
from pyspire.server.federation.refresh import (
    DEFAULT_REFRESH,
    MIN_REFRESH,
    RELIST,
    FederatedBundles,
    refresh_interval,
)
from pyspire.telemetry.handler import HttpResponse
from pyspire.telemetry.http import serve_http
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import (
    ConfigError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnavailableError,
)
from pyspire_sdk.memory_datastore import MemoryDataStore
from pyspire_sdk.model import FederationProfile, FederationRelationship
from pyspire_sdk.plugin import HostServices, NoConfig
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.pki import TestAuthority

from ..delivery import until
from .test_bundle_endpoint import document_with

FOREIGN = TrustDomain("foreign.test")
ENDPOINT_ID = SpiffeId.parse("spiffe://foreign.test/spire/server")


@dataclass
class Foreign:
    """A foreign trust domain's bundle endpoint: what it serves can be changed."""

    authority: TestAuthority
    bundle: Bundle
    port: int
    body: bytes | None = None

    def relationship(self, endpoint_id: SpiffeId = ENDPOINT_ID) -> FederationRelationship:
        return FederationRelationship(
            trust_domain=FOREIGN,
            bundle_endpoint_url=f"https://127.0.0.1:{self.port}/",
            profile=FederationProfile.HTTPS_SPIFFE,
            endpoint_spiffe_id=endpoint_id,
        )


@contextlib.asynccontextmanager
async def foreign_endpoint(*, web: bool = False) -> AsyncIterator[Foreign]:
    authority = TestAuthority(FOREIGN)
    tls = EndpointTls()
    if web:
        cert, key = authority.issue_tls_server()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "c").write_bytes(cert)
            (Path(folder) / "k").write_bytes(key)
            context.load_cert_chain(Path(folder) / "c", Path(folder) / "k")
        tls.use(context)
    else:
        svid = authority.issue(ENDPOINT_ID)
        assert svid.private_key is not None
        await tls.use_svid(svid.cert_chain, load_der_private_key(svid.private_key, None))
    foreign = Foreign(authority, replace(authority.bundle(sequence_number=3), refresh_hint=120), 0)
    endpoint = BundleEndpoint(lambda: foreign.bundle, 120)

    async def answer(path: str, headers: object) -> HttpResponse:
        if foreign.body is not None:
            return HttpResponse(HTTPStatus.OK, foreign.body, "application/json")
        return await endpoint.answer(path, {})

    async with serve_http(answer, "127.0.0.1", 0, name="foreign", ssl_context=tls.listening) as s:
        foreign.port = s.port
        yield foreign


@pytest.fixture
async def datastore(host_services: HostServices) -> AsyncIterator[MemoryDataStore]:
    store = MemoryDataStore()
    await store.configure(NoConfig(), host_services)
    yield store
    await store.close()


async def test_https_spiffe_fetch_is_stored_and_refreshed_on_the_hint(
    datastore: MemoryDataStore, fake_clock: FakeClock
) -> None:
    async with foreign_endpoint() as foreign:
        await datastore.set_bundle(foreign.authority.bundle(sequence_number=1))
        bundles = FederatedBundles(datastore, fake_clock, BundleFetcher())
        await bundles.store_static([foreign.relationship()])
        assert await bundles.refresh_due() == RELIST.total_seconds()
        stored = await datastore.get_bundle(FOREIGN)
        assert stored is not None
        assert stored.sequence_number == 3
        assert stored.refresh_hint == 120
        # The endpoint publishes a new authority: fetched once the hint has passed.
        newer = TestAuthority(FOREIGN)
        foreign.bundle = foreign.authority.bundle(
            extra_x509_authorities=[newer.x509_authority], sequence_number=4
        )
        await fake_clock.advance(timedelta(seconds=60))
        await bundles.refresh_due()
        stored = await datastore.get_bundle(FOREIGN)
        assert stored is not None and stored.sequence_number == 3
        await fake_clock.advance(timedelta(seconds=60))
        await bundles.refresh_due()
        stored = await datastore.get_bundle(FOREIGN)
        assert stored is not None and stored.sequence_number == 4
        assert len(stored.x509_authorities) == 2


async def test_a_tampered_bundle_is_refused_and_the_old_one_kept(
    datastore: MemoryDataStore, fake_clock: FakeClock
) -> None:
    async with foreign_endpoint() as foreign:
        bootstrap = foreign.authority.bundle(sequence_number=1)
        await datastore.set_bundle(bootstrap)
        bundles = FederatedBundles(datastore, fake_clock, BundleFetcher())
        document = foreign.bundle.to_spiffe_document()
        document["keys"][0]["x5c"].append(document["keys"][0]["x5c"][0])
        foreign.body = json.dumps(document).encode()
        with pytest.raises(InvalidArgumentError, match="refused the bundle served"):
            await bundles.refresh(foreign.relationship())
        foreign.body = b'{"spiffe_sequence": 9}'
        await datastore.create_federation_relationship(foreign.relationship())
        wait = await bundles.refresh_due()
        # Retried by the backoff policy, sooner than a regular refresh.
        assert 0 < wait <= 5.0
        assert await datastore.get_bundle(FOREIGN) == bootstrap
        foreign.body = None
        await fake_clock.advance(timedelta(seconds=wait))
        await bundles.refresh_due()
        stored = await datastore.get_bundle(FOREIGN)
        assert stored is not None and stored.sequence_number == 3


async def test_https_spiffe_endpoint_must_be_who_the_relationship_says(
    datastore: MemoryDataStore, fake_clock: FakeClock
) -> None:
    async with foreign_endpoint() as foreign:
        bundles = FederatedBundles(datastore, fake_clock, BundleFetcher())
        with pytest.raises(UnavailableError, match=r"\(bundle set\)"):
            await bundles.refresh(foreign.relationship())
        # Trusting another authority of the same name: the handshake fails.
        await datastore.set_bundle(TestAuthority(FOREIGN).bundle())
        with pytest.raises(UnavailableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
            await bundles.refresh(foreign.relationship())
        await datastore.set_bundle(foreign.authority.bundle(sequence_number=1))
        other = SpiffeId.parse("spiffe://foreign.test/not-the-server")
        with pytest.raises(PermissionDeniedError, match=r"expected spiffe://foreign\.test/not"):
            await bundles.refresh(foreign.relationship(other))
        stored = await datastore.get_bundle(FOREIGN)
        assert stored is not None and stored.sequence_number == 1


async def test_https_web_verifies_against_the_web_trust_store(
    datastore: MemoryDataStore, fake_clock: FakeClock
) -> None:
    async with foreign_endpoint(web=True) as foreign:
        relationship = FederationRelationship(
            trust_domain=FOREIGN,
            bundle_endpoint_url=f"https://127.0.0.1:{foreign.port}/",
            profile=FederationProfile.HTTPS_WEB,
        )
        system = FederatedBundles(datastore, fake_clock, BundleFetcher())
        with pytest.raises(UnavailableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
            await system.refresh(relationship)

        def trusting() -> ssl.SSLContext:
            context = ssl.create_default_context()
            context.load_verify_locations(cadata=foreign.authority.pem.decode())
            return context

        bundles = FederatedBundles(datastore, fake_clock, BundleFetcher(trusting))
        fetched = await bundles.refresh(relationship)
        assert fetched.sequence_number == 3


def test_refresh_interval_is_bounded() -> None:
    bundle = TestAuthority(FOREIGN).bundle()
    assert refresh_interval(bundle) == DEFAULT_REFRESH
    assert refresh_interval(replace(bundle, refresh_hint=1)) == MIN_REFRESH
    assert refresh_interval(replace(bundle, refresh_hint=10**9)) == timedelta(days=1)


def test_federates_with_config(tmp_path: Path) -> None:
    block = {
        "bundle_endpoint_url": "https://foreign.test:8443",
        "bundle_endpoint_profile": {
            "https_spiffe": {"endpoint_spiffe_id": "spiffe://foreign.test/spire/server"}
        },
    }
    loaded = load_document(
        SERVER_SCHEMA, document_with(tmp_path, {"federates_with": {"foreign.test": block}})
    )
    (relationship,) = loaded.settings.federation.relationships()
    assert relationship.trust_domain == FOREIGN
    assert relationship.endpoint_spiffe_id == ENDPOINT_ID
    bad = {
        "web.test": {
            "bundle_endpoint_url": "http://user@web.test",
            "bundle_endpoint_profile": {"https_web": {}},
        },
        "none.test": {"bundle_endpoint_url": "https://x", "bundle_endpoint_profile": {}},
    }
    with pytest.raises(ConfigError) as caught:
        load_document(SERVER_SCHEMA, document_with(tmp_path, {"federates_with": bad}))
    message = str(caught.value)
    assert 'federates_with."web.test".bundle_endpoint_url: expected an https URL' in message
    assert 'federates_with."none.test".bundle_endpoint_profile: set exactly one' in message
    with pytest.raises(ConfigError, match=r'federates_with\."Bad Name": not a trust domain name'):
        load_document(
            SERVER_SCHEMA, document_with(tmp_path, {"federates_with": {"Bad Name": block}})
        )
    with pytest.raises(ConfigError, match="does not federate with its own trust domain"):
        load_document(
            SERVER_SCHEMA, document_with(tmp_path, {"federates_with": {"example.org": block}})
        )


async def test_the_loop_fetches_when_woken_and_when_due(
    datastore: MemoryDataStore, fake_clock: FakeClock
) -> None:
    async with foreign_endpoint() as foreign, anyio.create_task_group() as group:
        await datastore.set_bundle(foreign.authority.bundle(sequence_number=1))
        bundles = FederatedBundles(datastore, fake_clock, BundleFetcher())
        group.start_soon(bundles.run)
        await until(lambda: fake_clock.sleepers == 1)
        # A relationship made through the API wakes the loop: fetched without time passing.
        await datastore.create_federation_relationship(foreign.relationship())
        bundles.refresh_soon(FOREIGN)
        await until_stored(datastore, 3)
        foreign.bundle = replace(foreign.bundle, sequence_number=5)
        await until(lambda: fake_clock.sleepers == 1)
        await fake_clock.advance(RELIST)
        await until(lambda: fake_clock.sleepers == 1)
        stored = await datastore.get_bundle(FOREIGN)
        assert stored is not None and stored.sequence_number == 3  # not due yet (hint 120 s)
        for _ in range(3):
            await fake_clock.advance(RELIST)
            await until(lambda: fake_clock.sleepers == 1)
        await until_stored(datastore, 5)
        group.cancel_scope.cancel()


async def until_stored(datastore: MemoryDataStore, sequence_number: int) -> None:
    for _ in range(1000):
        stored = await datastore.get_bundle(FOREIGN)
        if stored is not None and stored.sequence_number == sequence_number:
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"bundle {sequence_number} never stored")
