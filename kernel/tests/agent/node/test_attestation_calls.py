"""The calls an attesting agent makes, counted by the server: in a storm of a thousand agents
each one is server CPU. With a bundle to verify the server with (bootstrap or stored), no call
comes before AttestAgent, as with SPIRE's agent; with insecure bootstrap the bundle pinned
before attesting spares the first sync its GetBundle."""

from __future__ import annotations

import asyncio
import dataclasses

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from pyspire.agent.bootstrap import BootstrapTrust
from pyspire.agent.client import AttestResult, ServerClient
from pyspire.agent.storage import AgentStateStore
from pyspire_sdk.bundle import Bundle, X509Authority
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor

from .conftest import TD, Agent, make_ca, until, workload_entry
from .test_bundles_digest import GET_BUNDLE, sync
from .test_node_identity import START_RETRY_EVENT

ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"
SYNC_AUTHORIZED_ENTRIES = "/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries"


async def test_a_bootstrap_bundle_attests_without_fetching_the_bundle_first(agent: Agent) -> None:
    server = agent.server
    identity, client = await agent.build()  # reads the bootstrap bundle: one GetBundle
    before = server.calls(GET_BUNDLE)

    await identity.start()
    assert server.calls(ATTEST_AGENT) == 1
    assert server.calls(GET_BUNDLE) == before
    bootstrap = identity.bundle

    # The first sync brings the server's bundle: one GetBundle, and none after it.
    await server.create_entries(workload_entry("/web", identity.spiffe_id))
    _, first = await sync(client, 1)
    assert server.calls(GET_BUNDLE) == before + 1
    assert first.bundle.x509_authorities == bootstrap.x509_authorities
    await sync(client, 1)
    assert server.calls(GET_BUNDLE) == before + 1


async def test_insecure_bootstrap_pins_once_and_the_first_sync_does_not_fetch_again(
    agent: Agent,
) -> None:
    server = agent.server
    agent.bootstrap = BootstrapTrust(bundle=None, source="insecure_bootstrap")
    identity, client = await agent.build()
    await identity.start()
    assert server.calls(GET_BUNDLE) == 1  # the pin

    await server.create_entries(workload_entry("/web", identity.spiffe_id))
    _, first = await sync(client, 1)
    assert server.calls(SYNC_AUTHORIZED_ENTRIES) >= 1
    assert server.calls(GET_BUNDLE) == 1
    assert first.bundle == identity.bundle
    assert first.bundle == await server.bundle()


async def test_a_bootstrap_bundle_with_an_extra_authority_still_verifies(agent: Agent) -> None:
    """A bootstrap bundle may hold more than the server's authorities (an old CA kept for a
    while): the SVID chains to the one that signed it, and the bundle kept until the first
    sync is the bootstrap bundle as given."""
    server = agent.server
    served = await server.bundle()
    _, extra, _ = make_ca("retired ca")
    agent.bootstrap = BootstrapTrust(
        bundle=served.with_changes(
            x509_authorities=(*served.x509_authorities, X509Authority(extra))
        ),
        source="test",
    )
    identity, _ = await agent.build()
    before = server.calls(GET_BUNDLE)
    await identity.start()
    assert server.calls(GET_BUNDLE) == before
    assert identity.bundle == agent.bootstrap.bundle


class _MovedCa:
    """A CA the server moved to after the bootstrap bundle was made."""

    key, der, certificate = make_ca("moved ca")


class _MovedCaClient(ServerClient):
    """The server's answers as they are when its CA moves between the attestation's handshake
    and the signing of the agent SVID: the SVID comes from a CA the bundle the connection was
    verified with lacks, and GetBundle already lists that CA."""

    async def attest(
        self, plugin_name: str, node_attestor: AgentNodeAttestor, csr_der: bytes
    ) -> AttestResult:
        result = await super().attest(plugin_name, node_attestor, csr_der)
        leaf = x509.load_der_x509_certificate(result.svid.cert_chain[0])
        moved = (
            x509.CertificateBuilder()
            .subject_name(leaf.subject)
            .issuer_name(_MovedCa.certificate.subject)
            .public_key(leaf.public_key())  # type: ignore[arg-type]
            .serial_number(leaf.serial_number)
            .not_valid_before(leaf.not_valid_before_utc)
            .not_valid_after(leaf.not_valid_after_utc)
            .add_extension(
                leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
                critical=False,
            )
            .sign(_MovedCa.key, hashes.SHA256())
        )
        svid = dataclasses.replace(
            result.svid, cert_chain=(moved.public_bytes(serialization.Encoding.DER),)
        )
        return AttestResult(svid=svid, reattestable=result.reattestable)

    async def fetch_bundle(self) -> Bundle:
        bundle = await super().fetch_bundle()
        return bundle.with_changes(
            x509_authorities=(*bundle.x509_authorities, X509Authority(_MovedCa.der))
        )


async def test_an_svid_from_a_ca_the_bundle_lacks_is_checked_with_the_servers_bundle(
    agent: Agent,
) -> None:
    """The join token is spent once the SVID arrives: the agent fetches the server's current
    bundle on the attestation's verified connection rather than give the SVID up."""
    server = agent.server
    agent.client_type = _MovedCaClient
    identity, _ = await agent.build()
    before = server.calls(GET_BUNDLE)
    # Refused, the SVID would make the start retry (on the fake clock, for ever).
    await asyncio.wait_for(identity.start(), timeout=30)
    assert server.calls(ATTEST_AGENT) == 1
    assert server.calls(GET_BUNDLE) == before + 1
    assert X509Authority(_MovedCa.der) in identity.bundle.x509_authorities
    stored = await AgentStateStore(agent.directory, TD).read()
    assert stored is not None and stored.bundle == identity.bundle


async def test_an_svid_no_bundle_of_the_server_trusts_is_refused(agent: Agent) -> None:
    """An SVID that chains neither to the bundle nor to the server's current one is an answer
    the agent cannot use: the start retries, as for any malformed answer."""
    agent.client_type = _UntrustedSvidClient
    identity, _ = await agent.build()
    with structlog.testing.capture_logs() as logs:
        starting = asyncio.create_task(identity.start())
        try:
            await until(lambda: agent.clock.sleepers > 0)
        finally:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
    [retry] = [log for log in logs if log["event"] == START_RETRY_EVENT]
    assert "does not chain to an authority" in retry["error"]
    assert await AgentStateStore(agent.directory, TD).read() is None


class _UntrustedSvidClient(_MovedCaClient):
    """As :class:`_MovedCaClient`, but GetBundle does not list the CA either."""

    async def fetch_bundle(self) -> Bundle:
        return await ServerClient.fetch_bundle(self)
