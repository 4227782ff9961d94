"""The server's own SVID is composed as the server's, and a rotation a composer fails is retried
with backoff while the server keeps its current SVID."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pyspire.ca.composition import CredentialComposition
from pyspire.catalog import NamedPlugin
from pyspire.server.context import ServerContext
from pyspire.server.identity import ServerIdentity
from pyspire.transport.tls import RotatingServerContext
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.errors import UnavailableError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.credential_composer import (
    CredentialComposer,
    JwtSvidClaims,
    SubjectAttribute,
    X509CaTemplate,
    X509SvidTemplate,
)
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock

from .delivery import running, settle, until


class ServerComposer:
    """Names the server SVID ``OU=server``; fails while ``down`` is set."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def configure(self, config: Any, host: HostServices) -> None:
        return None

    async def close(self) -> None:
        return None

    async def compose_server_x509_ca(self, template: X509CaTemplate) -> X509CaTemplate:
        return template

    async def compose_server_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        self.calls += 1
        if self.down:
            raise UnavailableError("policy service down")
        return replace(template, subject=(*template.subject, SubjectAttribute("2.5.4.11", "srv")))

    async def compose_agent_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return template

    async def compose_workload_x509_svid(
        self, spiffe_id: SpiffeId, public_key: bytes, template: X509SvidTemplate
    ) -> X509SvidTemplate:
        return template

    async def compose_workload_jwt_svid(
        self, spiffe_id: SpiffeId, claims: JwtSvidClaims
    ) -> JwtSvidClaims:
        return claims


@pytest.fixture
def composer() -> ServerComposer:
    return ServerComposer()


@pytest.fixture
def identity(server_context: ServerContext, composer: ServerComposer) -> ServerIdentity:
    context = server_context

    async def bundle() -> Bundle | None:
        return await context.datastore.get_bundle(context.trust_domain)

    named: list[NamedPlugin[CredentialComposer]] = [NamedPlugin("policy", composer)]
    return ServerIdentity(
        trust_domain=context.trust_domain,
        ca=context.ca,
        bundle=bundle,
        clock=context.clock,
        tls=RotatingServerContext(),
        ttl=timedelta(hours=1),
        composition=CredentialComposition(named),
    )


async def test_the_server_svid_is_composed_as_the_servers(identity: ServerIdentity) -> None:
    await identity.rotate()
    leaf = x509.load_der_x509_certificate(identity.svid.cert_chain[0])
    [unit] = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert unit.value == "srv"


async def test_a_failed_rotation_is_retried_and_the_current_svid_kept(
    identity: ServerIdentity, composer: ServerComposer, fake_clock: FakeClock
) -> None:
    await identity.rotate()
    first = identity.svid
    async with running(identity.run) as task:
        composer.down = True
        await identity.ca_changed()
        await until(lambda: composer.calls == 2)
        await settle()
        assert not task.done()  # the failure did not end the loop
        assert identity.svid is first
        composer.down = False
        await fake_clock.advance(1)  # ROTATION_RETRY waits at most 1 s after one failure
        await until(lambda: identity.svid is not first)
    assert composer.calls == 3


def _other_servers_ca() -> bytes:
    """A CA certificate as another server of the trust domain would publish it."""
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "other server")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


async def test_a_ca_another_server_published_is_trusted_once_the_bundle_changes(
    server_context: ServerContext,
) -> None:
    from pyspire_sdk.bundle import X509Authority

    context = server_context
    extra: list[X509Authority] = []

    async def bundle() -> Bundle | None:
        stored = await context.datastore.get_bundle(context.trust_domain)
        assert stored is not None
        return replace(stored, x509_authorities=stored.x509_authorities + tuple(extra))

    tls = RotatingServerContext()
    identity = ServerIdentity(
        trust_domain=context.trust_domain,
        ca=context.ca,
        bundle=bundle,
        clock=context.clock,
        tls=tls,
        ttl=timedelta(hours=1),
    )

    def trusted() -> set[bytes]:
        assert tls._current is not None
        return set(tls._current.get_ca_certs(binary_form=True))

    await identity.rotate()
    other = _other_servers_ca()
    assert other not in trusted()
    async with running(identity.run):
        extra.append(X509Authority(other))
        published = await bundle()
        assert published is not None
        identity.bundle_changed(published)
        await until(lambda: other in trusted())
