"""x509pop: the SDK's contract with ECDSA, RSA and SPIFFE-mode certificates, SPIRE's selectors
and agent IDs, and every refusal with its reason."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from pyspire_nodeattestor_x509pop import (
    AgentX509PopAttestor,
    ServerX509PopAttestor,
    X509PopAgentConfig,
    X509PopServerConfig,
)
from pyspire_nodeattestor_x509pop.plugin import (
    pyspire_agent_node_attestors,
    pyspire_server_node_attestors,
)
from pyspire_nodeattestor_x509pop.protocol import answer_challenge

from pyspire_sdk.challenge import combined_digest
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import (
    ConfigError,
    InvalidArgumentError,
    PermissionDeniedError,
    PluginError,
)
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import (
    AgentNodeAttestor,
    AttestationPeer,
    ServerNodeAttestor,
)
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.host import StaticTrustBundle
from pyspire_sdk.testing.node_attestor_contract import (
    NodeAttestorContract,
    Transcript,
    run_attestation,
)
from pyspire_sdk.testing.pki import TestAuthority
from pyspire_sdk.testing.readme import assert_readme_documents

README = Path(__file__).resolve().parents[1] / "README.md"


def sha1(der: bytes) -> str:
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


def agent_path(path: str) -> SpiffeId:
    return SpiffeId.parse(f"spiffe://example.org/spire/agent/{path}")


async def make_server(host: HostServices, **settings: Any) -> ServerX509PopAttestor:
    server = ServerX509PopAttestor()
    await server.configure(X509PopServerConfig(**settings), host)
    return server


async def make_agent(host: HostServices, **settings: Any) -> AgentX509PopAttestor:
    agent = AgentX509PopAttestor()
    await agent.configure(X509PopAgentConfig(**settings), host)
    return agent


async def node_agent(pki: Any, host: HostServices, node: Any, *extra: Any) -> AgentX509PopAttestor:
    """An agent presenting ``node`` and the intermediate in one file (and ``extra`` after)."""
    return await make_agent(
        host,
        private_key_path=pki.write_key("node.key", node.key),
        certificate_path=pki.write("node.pem", node, pki.intermediate, *extra),
    )


# -- the contract, three ways ----------------------------------------------------------------


class TestEcdsaCertificateChain(NodeAttestorContract):
    @pytest.fixture
    def node(self, pki: Any) -> Any:
        return pki.node(kind="ec")

    @pytest_asyncio.fixture
    async def server_node_attestor(
        self, pki: Any, host_services: HostServices
    ) -> AsyncIterator[ServerNodeAttestor]:
        server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
        yield server
        await server.close()

    @pytest_asyncio.fixture
    async def agent_node_attestor(
        self, pki: Any, node: Any, host_services: HostServices
    ) -> AsyncIterator[AgentNodeAttestor]:
        agent = await node_agent(pki, host_services, node)
        yield agent
        await agent.close()

    @pytest.fixture
    def expected_agent_id(self, node: Any) -> SpiffeId:
        return agent_path(f"x509pop/{sha1(node.der)}")


class TestRsaCertificateWithIntermediatesFile(TestEcdsaCertificateChain):
    @pytest.fixture
    def node(self, pki: Any) -> Any:
        return pki.node(kind="rsa")

    @pytest_asyncio.fixture
    async def agent_node_attestor(
        self, pki: Any, node: Any, host_services: HostServices
    ) -> AsyncIterator[AgentNodeAttestor]:
        agent = await make_agent(
            host_services,
            private_key_path=pki.write_key(
                "node.key", node.key, serialization.PrivateFormat.TraditionalOpenSSL
            ),
            certificate_path=pki.write("node.pem", node),
            intermediates_path=pki.write("intermediates.pem", pki.intermediate),
        )
        yield agent
        await agent.close()


def svid_files(pki: Any, authority: TestAuthority, path: str, clock: FakeClock) -> dict[str, Path]:
    svid = authority.issue(SpiffeId.parse(f"spiffe://example.org{path}"), now=clock.now())
    key = serialization.load_der_private_key(svid.private_key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    certificate = x509.load_der_x509_certificate(svid.cert_chain[0])
    (pki.directory / "svid.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return {
        "private_key_path": pki.write_key("svid.key", key),
        "certificate_path": pki.directory / "svid.pem",
    }


class TestSpiffeMode(NodeAttestorContract):
    """The agent attests with an X509-SVID of the server's own trust domain."""

    @pytest.fixture
    def authority(self, fake_clock: FakeClock) -> TestAuthority:
        return TestAuthority(TrustDomain("example.org"), now=fake_clock.now())

    @pytest_asyncio.fixture
    async def server_node_attestor(
        self, authority: TestAuthority, host_services: HostServices
    ) -> AsyncIterator[ServerNodeAttestor]:
        host = dataclasses.replace(
            host_services, trust_bundle=StaticTrustBundle(authority.bundle())
        )
        server = await make_server(host, mode="spiffe")
        yield server
        await server.close()

    @pytest_asyncio.fixture
    async def agent_node_attestor(
        self, pki: Any, authority: TestAuthority, host_services: HostServices, fake_clock: FakeClock
    ) -> AsyncIterator[AgentNodeAttestor]:
        files = svid_files(pki, authority, "/spire-exchange/node1", fake_clock)
        agent = await make_agent(host_services, **files)
        yield agent
        await agent.close()

    @pytest.fixture
    def expected_agent_id(self) -> SpiffeId:
        return agent_path("x509pop/node1")


# -- what the server concludes ---------------------------------------------------------------


async def test_selectors_are_spires(pki: Any, host_services: HostServices) -> None:
    node = pki.node(
        serial=0x0ABC,
        uris=["x509pop://example.org/datacenter/dc1/row2", "x509pop://other.org/rack/r9"],
    )
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    result = await run_attestation(server, await node_agent(pki, host_services, node))

    assert result.selector_values == (
        "subject:cn:node1",
        f"ca:fingerprint:{sha1(pki.intermediate.der)}",
        f"ca:fingerprint:{sha1(pki.root.der)}",
        "serialnumber:0abc",
        "san:datacenter:dc1/row2",
    )
    assert result.can_reattest is True


async def test_the_agent_path_template_names_the_agent(
    pki: Any, host_services: HostServices
) -> None:
    node = pki.node(subject="web-7", uris=["x509pop://example.org/datacenter/dc1"])
    server = await make_server(
        host_services,
        ca_bundle_path=pki.write("ca.pem", pki.root),
        agent_path_template=(
            '/{{ .TrustDomain }}/{{ index .URISanSelectors "datacenter" }}/'
            "{{ .Subject.CommonName }}/{{ .SerialNumberHex }}"
        ),
    )
    result = await run_attestation(server, await node_agent(pki, host_services, node))
    serial = f"{node.certificate.serial_number:x}"
    serial = serial if len(serial) % 2 == 0 else "0" + serial
    assert result.agent_id == agent_path(f"example.org/dc1/web-7/{serial}")


async def test_a_common_name_that_makes_no_path_is_refused(
    pki: Any, host_services: HostServices
) -> None:
    node = pki.node(subject="two words")
    server = await make_server(
        host_services,
        ca_bundle_path=pki.write("ca.pem", pki.root),
        agent_path_template="cn/{{ .Subject.CommonName }}",
    )
    with pytest.raises(PermissionDeniedError, match=r"cannot name the agent: .*forbidden"):
        await run_attestation(server, await node_agent(pki, host_services, node))


async def test_several_ca_files_are_all_trusted(pki: Any, host_services: HostServices) -> None:
    other = pki.authority("other-root")
    server = await make_server(
        host_services,
        ca_bundle_paths=(pki.write("ca1.pem", pki.root), pki.write("ca2.pem", other)),
    )
    for issuer in (pki.intermediate, other):
        node = pki.node(issuer)
        agent = await make_agent(
            host_services,
            private_key_path=pki.write_key("n.key", node.key),
            certificate_path=pki.write(
                "n.pem", node, *([pki.intermediate] if issuer is pki.intermediate else [])
            ),
        )
        assert (await run_attestation(server, agent)).agent_id == agent_path(
            f"x509pop/{sha1(node.der)}"
        )


# -- refusals ---------------------------------------------------------------------------------


async def test_a_certificate_of_an_unknown_ca_is_refused(
    pki: Any, host_services: HostServices
) -> None:
    stranger = pki.authority("stranger")
    node = pki.node(stranger)
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    agent = await make_agent(
        host_services,
        private_key_path=pki.write_key("n.key", node.key),
        certificate_path=pki.write("n.pem", node),
    )
    transcript = Transcript()
    with (
        pytest.raises(PermissionDeniedError, match="does not chain to a trusted CA"),
    ):
        await run_attestation(server, agent, transcript=transcript)
    assert transcript.exchanges == [], "a challenge was sent for an untrusted certificate"


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        ((timedelta(days=-3), timedelta(days=-1)), "agent's certificate expired at 2029-12-31"),
        ((timedelta(days=1), timedelta(days=3)), "is not valid before 2030-01-02"),
    ],
    ids=["expired", "not-yet-valid"],
)
async def test_a_certificate_outside_its_validity_is_refused(
    pki: Any, host_services: HostServices, fake_clock: FakeClock, window: Any, reason: str
) -> None:
    start, end = window
    node = pki.node(not_before=fake_clock.now() + start, not_after=fake_clock.now() + end)
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    with pytest.raises(PermissionDeniedError, match=f"certificate verification failed: .*{reason}"):
        await run_attestation(server, await node_agent(pki, host_services, node))


async def test_the_certificate_expires_by_the_servers_clock(
    pki: Any, host_services: HostServices, fake_clock: FakeClock
) -> None:
    node = pki.node(not_after=fake_clock.now() + timedelta(minutes=5))
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    agent = await node_agent(pki, host_services, node)
    await run_attestation(server, agent)
    await fake_clock.advance(timedelta(minutes=6))
    with pytest.raises(PermissionDeniedError, match="expired at"):
        await run_attestation(server, agent)


async def test_a_certificate_not_meant_for_signatures_is_refused(
    pki: Any, host_services: HostServices
) -> None:
    node = pki.node(digital_signature=False)
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    with pytest.raises(PermissionDeniedError, match="lacks digitalSignature"):
        await run_attestation(server, await node_agent(pki, host_services, node))


async def test_a_signature_without_the_certificates_key_is_refused(
    pki: Any, host_services: HostServices
) -> None:
    """Someone who copied the certificate but not its key cannot answer for it."""
    node = pki.node()
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    honest = await node_agent(pki, host_services, node)
    thief_key = ec.generate_private_key(ec.SECP256R1())

    async def thief(challenge: bytes) -> bytes:
        return answer_challenge(thief_key, challenge)

    with pytest.raises(PermissionDeniedError, match="signature does not verify"):
        await server.attest(await honest.attestation_payload(), thief)


async def test_a_replayed_answer_is_refused(pki: Any, host_services: HostServices) -> None:
    node = pki.node(kind="rsa")
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    agent = await node_agent(pki, host_services, node)
    transcript = Transcript()
    await run_attestation(server, agent, transcript=transcript)
    [(_, recorded)] = transcript.exchanges

    async def replay(challenge: bytes) -> bytes:
        return recorded

    with pytest.raises(PermissionDeniedError, match="RSA signature does not verify"):
        await server.attest(transcript.payload, replay)


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (
            '{"rsa_signature":{"nonce":"AA==","signature":"AA=="}}',
            PermissionDeniedError,
            "expected ecdsa_signature",
        ),
        (
            '{"ecdsa_signature":{"nonce":"AAAA","r":"AQ==","s":"AQ=="}}',
            PermissionDeniedError,
            "agent nonce is 3 bytes long",
        ),
        (
            '{"ecdsa_signature":{"nonce":null}}',
            InvalidArgumentError,
            r"challenge response\.ecdsa_signature\.nonce is null",
        ),
        ("not json", InvalidArgumentError, "challenge response is not JSON"),
    ],
)
async def test_a_malformed_or_mismatched_answer_is_refused_with_its_reason(
    pki: Any, host_services: HostServices, answer: str, error: type[Exception], message: str
) -> None:
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    agent = await node_agent(pki, host_services, pki.node(kind="ec"))
    with pytest.raises(error, match=message):
        await run_attestation(server, agent, alter_answer=lambda _: answer.encode())


async def test_too_many_intermediates_are_refused_before_parsing(
    pki: Any, host_services: HostServices
) -> None:
    node = pki.node()
    server = await make_server(
        host_services, ca_bundle_path=pki.write("ca.pem", pki.root), max_intermediates=1
    )
    agent = await node_agent(pki, host_services, node, pki.root)
    with pytest.raises(InvalidArgumentError, match=r"too many intermediate certificates: 2"):
        await run_attestation(server, agent)


async def test_an_rsa_key_over_the_limit_is_refused(pki: Any, host_services: HostServices) -> None:
    server = await make_server(
        host_services, ca_bundle_path=pki.write("ca.pem", pki.root), max_rsa_key_size=1024
    )
    agent = await node_agent(pki, host_services, pki.node(kind="rsa"))
    with pytest.raises(InvalidArgumentError, match=r"2048-bit RSA key, more than 1024"):
        await run_attestation(server, agent)


async def test_unparseable_certificates_are_named(pki: Any, host_services: HostServices) -> None:
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    payload = json.dumps({"certificates": ["AAAA"]}).encode()
    with pytest.raises(InvalidArgumentError, match=r"payload\.certificates\[0\] .* does not parse"):
        await server.attest(payload, _no_challenge)
    with pytest.raises(InvalidArgumentError, match="no certificate to attest"):
        await server.attest(b'{"certificates":[]}', _no_challenge)


async def _no_challenge(challenge: bytes) -> bytes:
    raise AssertionError("no challenge expected")


# -- verify_client_ip -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "refusal"),
    [
        ("127.0.0.1", None),
        ("::ffff:127.0.0.1", None),
        ("192.0.2.1", "client IP 192.0.2.1 does not match any IP SAN"),
        (None, "does not know the agent's address"),
    ],
)
async def test_verify_client_ip_matches_the_peer_to_the_ip_sans(
    pki: Any, host_services: HostServices, peer: str | None, refusal: str | None
) -> None:
    node = pki.node(ips=["127.0.0.1", "10.1.2.3"])
    server = await make_server(
        host_services, ca_bundle_path=pki.write("ca.pem", pki.root), verify_client_ip=True
    )
    agent = await node_agent(pki, host_services, node)
    attempt = run_attestation(server, agent, peer=AttestationPeer(address=peer))
    if refusal is None:
        assert (await attempt).agent_id == agent_path(f"x509pop/{sha1(node.der)}")
    else:
        with pytest.raises(PermissionDeniedError, match=refusal):
            await attempt


async def test_without_verify_client_ip_the_peer_does_not_matter(
    pki: Any, host_services: HostServices
) -> None:
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    agent = await node_agent(pki, host_services, pki.node())
    await run_attestation(server, agent, peer=AttestationPeer(address="192.0.2.1"))


# -- spiffe mode ------------------------------------------------------------------------------


async def spiffe_server(
    host: HostServices, authority: TestAuthority, **settings: Any
) -> ServerX509PopAttestor:
    source = StaticTrustBundle(authority.bundle())
    return await make_server(
        dataclasses.replace(host, trust_bundle=source), mode="spiffe", **settings
    )


async def test_spiffe_mode_refuses_an_svid_outside_the_prefix(
    pki: Any, host_services: HostServices, fake_clock: FakeClock
) -> None:
    authority = TestAuthority(TrustDomain("example.org"), now=fake_clock.now())
    server = await spiffe_server(host_services, authority)
    agent = await make_agent(host_services, **svid_files(pki, authority, "/web/node1", fake_clock))
    with pytest.raises(PermissionDeniedError, match="'/web/node1' is not under svid_prefix"):
        await run_attestation(server, agent)


async def test_spiffe_mode_with_an_empty_prefix_keeps_the_whole_path(
    pki: Any, host_services: HostServices, fake_clock: FakeClock
) -> None:
    authority = TestAuthority(TrustDomain("example.org"), now=fake_clock.now())
    server = await spiffe_server(host_services, authority, svid_prefix="")
    agent = await make_agent(host_services, **svid_files(pki, authority, "/web/node1", fake_clock))
    assert (await run_attestation(server, agent)).agent_id == agent_path("x509pop/web/node1")


async def test_spiffe_mode_trusts_only_the_servers_bundle(
    pki: Any, host_services: HostServices, fake_clock: FakeClock
) -> None:
    ours = TestAuthority(TrustDomain("example.org"), now=fake_clock.now())
    theirs = TestAuthority(TrustDomain("example.org"), now=fake_clock.now())
    server = await spiffe_server(host_services, ours)
    files = svid_files(pki, theirs, "/spire-exchange/node1", fake_clock)
    with pytest.raises(PermissionDeniedError, match="certificate verification failed"):
        await run_attestation(server, await make_agent(host_services, **files))


async def test_spiffe_mode_follows_the_bundle_as_it_changes(
    pki: Any, host_services: HostServices, fake_clock: FakeClock
) -> None:
    old = TestAuthority(TrustDomain("example.org"), now=fake_clock.now())
    new = TestAuthority(TrustDomain("example.org"), now=fake_clock.now())
    source = StaticTrustBundle(old.bundle())
    server = await make_server(
        dataclasses.replace(host_services, trust_bundle=source), mode="spiffe"
    )
    agent = await make_agent(host_services, **svid_files(pki, new, "/spire-exchange/n", fake_clock))
    with pytest.raises(PermissionDeniedError, match="certificate verification failed"):
        await run_attestation(server, agent)
    source.bundle = new.bundle()
    assert (await run_attestation(server, agent)).agent_id == agent_path("x509pop/n")


async def test_spiffe_mode_needs_the_hosts_bundle(host_services: HostServices) -> None:
    with pytest.raises(PluginError, match="needs the server's trust bundle"):
        await make_server(host_services, mode="spiffe")


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ({}, "ca_bundle_path", "external_pki mode needs the CA certificates"),
        ({"ca_bundle_path": "a", "ca_bundle_paths": ["b"]}, "ca_bundle_paths", "not both"),
        ({"mode": "spiffe", "ca_bundle_path": "a"}, "ca_bundle_path", "spiffe mode verifies"),
        ({"mode": "tpm"}, "mode", "one of 'external_pki', 'spiffe'"),
        ({"ca_bundle_path": "a", "max_intermediates": 0}, "max_intermediates", "greater than 0"),
        ({"ca_bundle_path": "a", "max_rsa_key_size": -1}, "max_rsa_key_size", "greater than 0"),
        (
            {"ca_bundle_path": "a", "agent_path_template": "{{ .X | y }}"},
            "agent_path_template",
            "not supported",
        ),
        ({"ca_bundle_path": "a", "spiffe_prefix": "/x"}, "spiffe_prefix", "unknown"),
    ],
)
def test_bad_server_settings_are_named_with_their_key(
    table: dict[str, object], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(X509PopServerConfig, table, path="server.plugins.node_attestor.x509pop")
    [issue] = raised.value.issues
    assert issue.path == f"server.plugins.node_attestor.x509pop.{path}"
    assert message in issue.message


async def test_unreadable_ca_files_fail_configure_naming_the_file(
    tmp_path: Path, host_services: HostServices
) -> None:
    with pytest.raises(PluginError, match=r"cannot read the CA bundle .*missing\.pem"):
        await make_server(host_services, ca_bundle_path=tmp_path / "missing.pem")
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(PluginError, match=r"empty\.pem' holds no PEM certificate"):
        await make_server(host_services, ca_bundle_path=empty)


async def test_the_agent_refuses_a_key_that_is_not_the_certificates(
    pki: Any, host_services: HostServices
) -> None:
    node, other = pki.node(), pki.node()
    with pytest.raises(PluginError, match="does not hold the key of the first certificate"):
        await make_agent(
            host_services,
            private_key_path=pki.write_key("other.key", other.key),
            certificate_path=pki.write("node.pem", node),
        )


async def test_the_agent_names_the_setting_of_a_bad_file(
    pki: Any, host_services: HostServices, tmp_path: Path
) -> None:
    node = pki.node()
    key = pki.write_key("node.key", node.key)
    cert = pki.write("node.pem", node)
    garbage = tmp_path / "garbage"
    garbage.write_text("garbage")
    edwards = tmp_path / "ed.key"
    edwards.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cases = [
        ({"private_key_path": tmp_path / "nope", "certificate_path": cert}, "private_key_path"),
        ({"private_key_path": garbage, "certificate_path": cert}, "private_key_path: .* no"),
        ({"private_key_path": edwards, "certificate_path": cert}, "use an RSA or ECDSA key"),
        ({"private_key_path": key, "certificate_path": garbage}, "certificate_path: .* no PEM"),
        (
            {"private_key_path": key, "certificate_path": cert, "intermediates_path": garbage},
            "intermediates_path",
        ),
    ]
    for settings, message in cases:
        with pytest.raises(PluginError, match=message):
            await make_agent(host_services, **settings)


# -- the wire, as SPIRE writes it -------------------------------------------------------------


async def test_the_payload_lists_the_chain_leaf_first(
    pki: Any, host_services: HostServices
) -> None:
    node = pki.node()
    agent = await make_agent(
        host_services,
        private_key_path=pki.write_key("node.key", node.key),
        certificate_path=pki.write("node.pem", node, pki.intermediate),
        intermediates_path=pki.write("more.pem", pki.root),
    )
    payload = await agent.attestation_payload()
    assert list(json.loads(payload)) == ["certificates"]
    assert payload.startswith(b'{"certificates":["')

    assert [base64.b64decode(c) for c in json.loads(payload)["certificates"]] == [
        node.der,
        pki.intermediate.der,
        pki.root.der,
    ]


async def test_rsa_answers_are_pss_with_the_longest_salt_over_both_nonces(
    pki: Any, host_services: HostServices
) -> None:

    node = pki.node(kind="rsa")
    agent = await node_agent(pki, host_services, node)
    server_nonce = bytes(range(32))
    challenge = json.dumps({"rsa_signature": {"nonce": base64.b64encode(server_nonce).decode()}})
    answer = json.loads(await agent.answer_challenge(challenge.encode()))
    assert answer["ecdsa_signature"] is None
    assert set(answer["rsa_signature"]) == {"nonce", "signature"}
    agent_nonce = base64.b64decode(answer["rsa_signature"]["nonce"])
    public = node.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        base64.b64decode(answer["rsa_signature"]["signature"]),
        combined_digest(server_nonce, agent_nonce),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
        utils.Prehashed(hashes.SHA256()),
    )


async def test_ecdsa_answers_carry_r_and_s_as_big_endian_integers(
    pki: Any, host_services: HostServices
) -> None:

    node = pki.node(kind="ec")
    agent = await node_agent(pki, host_services, node)
    server_nonce = bytes(32)
    challenge = {
        "rsa_signature": None,
        "ecdsa_signature": {"nonce": base64.b64encode(server_nonce).decode()},
    }
    answer = json.loads(await agent.answer_challenge(json.dumps(challenge).encode()))
    assert answer["rsa_signature"] is None
    signed = answer["ecdsa_signature"]
    assert set(signed) == {"nonce", "r", "s"}
    r, s = (int.from_bytes(base64.b64decode(signed[k]), "big") for k in ("r", "s"))
    for key in ("r", "s"):
        assert not base64.b64decode(signed[key]).startswith(b"\x00")
    public = node.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    digest = combined_digest(server_nonce, base64.b64decode(signed["nonce"]))
    public.verify(
        utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )


async def test_the_server_challenges_in_spires_shape(pki: Any, host_services: HostServices) -> None:
    server = await make_server(host_services, ca_bundle_path=pki.write("ca.pem", pki.root))
    for kind, asked, other in (
        ("ec", "ecdsa_signature", "rsa_signature"),
        ("rsa", "rsa_signature", "ecdsa_signature"),
    ):
        transcript = Transcript()
        agent = await node_agent(pki, host_services, pki.node(kind=kind))
        await run_attestation(server, agent, transcript=transcript)
        [(challenge, _)] = transcript.exchanges
        document = json.loads(challenge)
        assert list(document) == ["rsa_signature", "ecdsa_signature"]
        assert document[other] is None
        assert list(document[asked]) == ["nonce"]

        assert len(base64.b64decode(document[asked]["nonce"])) == 32


async def test_a_challenge_for_the_other_key_type_is_refused_by_the_agent(
    pki: Any, host_services: HostServices
) -> None:
    agent = await node_agent(pki, host_services, pki.node(kind="ec"))
    with pytest.raises(InvalidArgumentError, match="challenge has no ecdsa_signature"):
        await agent.answer_challenge(b'{"rsa_signature":{"nonce":"AA=="}}')


# -- registration and documentation -----------------------------------------------------------


def test_both_halves_register_under_one_name() -> None:
    [server] = pyspire_server_node_attestors()
    [agent] = pyspire_agent_node_attestors()
    assert server.name == agent.name == "x509pop"
    assert isinstance(server.factory(), ServerNodeAttestor)
    assert isinstance(agent.factory(), AgentNodeAttestor)


def test_the_readme_shows_both_settings_tables() -> None:
    assert_readme_documents(README, X509PopServerConfig, X509PopAgentConfig)
