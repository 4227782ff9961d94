"""sshpop: the SDK's contract with Ed25519, ECDSA and RSA host keys, SPIRE's agent ID, the host
certificate checks and every refusal with its reason."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pyspire_nodeattestor_sshpop import (
    AgentSshPopAttestor,
    ServerSshPopAttestor,
    SshPopAgentConfig,
    SshPopServerConfig,
)
from pyspire_nodeattestor_sshpop.plugin import (
    pyspire_agent_node_attestors,
    pyspire_server_node_attestors,
)
from pyspire_nodeattestor_sshpop.protocol import encode_answer
from pyspire_nodeattestor_sshpop.ssh import Signature, sign

from pyspire_sdk.challenge import combined_digest
from pyspire_sdk.config import load_config
from pyspire_sdk.errors import ConfigError, InvalidArgumentError, PermissionDeniedError, PluginError
from pyspire_sdk.plugin import HostServices
from pyspire_sdk.plugins.node_attestor import AgentNodeAttestor, ServerNodeAttestor
from pyspire_sdk.spiffeid import SpiffeId
from pyspire_sdk.testing import FakeClock
from pyspire_sdk.testing.node_attestor_contract import (
    NodeAttestorContract,
    Transcript,
    run_attestation,
)
from pyspire_sdk.testing.readme import assert_readme_documents

README = Path(__file__).resolve().parents[1] / "README.md"


def fingerprint(blob: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()


def agent_path(path: str) -> SpiffeId:
    return SpiffeId.parse(f"spiffe://example.org/spire/agent/{path}")


async def make_server(host: HostServices, ssh_pki: Any, **settings: Any) -> ServerSshPopAttestor:
    settings.setdefault("cert_authorities", (ssh_pki.ca_line(),))
    server = ServerSshPopAttestor()
    await server.configure(SshPopServerConfig(**settings), host)
    return server


async def make_agent(host: HostServices, node: Any) -> AgentSshPopAttestor:
    agent = AgentSshPopAttestor()
    await agent.configure(
        SshPopAgentConfig(host_key_path=node.key_path, host_cert_path=node.cert_path), host
    )
    return agent


# -- the contract, per key type --------------------------------------------------------------


class TestEd25519HostKey(NodeAttestorContract):
    kind = "ed25519"

    @pytest.fixture
    def node(self, ssh_pki: Any) -> Any:
        return ssh_pki.host(kind=self.kind)

    @pytest_asyncio.fixture
    async def server_node_attestor(
        self, ssh_pki: Any, host_services: HostServices
    ) -> AsyncIterator[ServerNodeAttestor]:
        server = await make_server(host_services, ssh_pki)
        yield server
        await server.close()

    @pytest_asyncio.fixture
    async def agent_node_attestor(
        self, node: Any, host_services: HostServices
    ) -> AsyncIterator[AgentNodeAttestor]:
        agent = await make_agent(host_services, node)
        yield agent
        await agent.close()

    @pytest.fixture
    def expected_agent_id(self, node: Any) -> SpiffeId:
        return agent_path(f"sshpop/{fingerprint(node.blob)}")


class TestEcdsaP256HostKey(TestEd25519HostKey):
    kind = "p256"


class TestEcdsaP384HostKey(TestEd25519HostKey):
    kind = "p384"


class TestRsaHostKey(TestEd25519HostKey):
    kind = "rsa"


# -- what the server concludes ---------------------------------------------------------------


async def test_the_agent_id_is_spires_fingerprint_and_nodes_have_no_selectors(
    ssh_pki: Any, host_services: HostServices
) -> None:
    node = ssh_pki.host()
    result = await run_attestation(
        await make_server(host_services, ssh_pki), await make_agent(host_services, node)
    )
    digest = hashlib.sha256(node.blob).digest()
    assert result.agent_id.path == (
        "/spire/agent/sshpop/" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    )
    assert result.selector_values == ()
    assert result.can_reattest is True


async def test_templates_see_the_hostname_and_the_principals(
    ssh_pki: Any, host_services: HostServices
) -> None:
    node = ssh_pki.host(principals=("web7.prod.example.org", "web7"))
    server = await make_server(
        host_services,
        ssh_pki,
        canonical_domain="prod.example.org",
        agent_path_template="{{ .Hostname }}/{{ index .ValidPrincipals 1 }}/{{ .KeyId }}",
    )
    result = await run_attestation(server, await make_agent(host_services, node))
    assert result.agent_id == agent_path("web7/web7/node1-key")


async def test_cas_from_the_file_and_the_list_are_trusted_together(
    ssh_pki: Any, host_services: HostServices, tmp_path: Path
) -> None:
    second = ssh_pki.new_key("p256")
    listing = tmp_path / "cas.pub"
    listing.write_text(
        f"# host certificate authorities\n\n{ssh_pki.ca_line(second)}\n"
        f'cert-authority,principals="*.example.org" {ssh_pki.ca_line()}\n'
    )
    server = await make_server(
        host_services, ssh_pki, cert_authorities=(), cert_authorities_path=listing
    )
    for ca in (ssh_pki.ca, second):
        node = ssh_pki.host(ca=ca, name=f"host-{id(ca)}")
        await run_attestation(server, await make_agent(host_services, node))


# -- refusals ---------------------------------------------------------------------------------


async def refused(
    ssh_pki: Any, host_services: HostServices, node: Any, message: str, **settings: Any
) -> Transcript:
    server = await make_server(host_services, ssh_pki, **settings)
    transcript = Transcript()
    with pytest.raises(PermissionDeniedError, match=message):
        await run_attestation(server, await make_agent(host_services, node), transcript=transcript)
    return transcript


async def test_a_certificate_of_an_unknown_ca_is_refused_before_any_challenge(
    ssh_pki: Any, host_services: HostServices
) -> None:
    node = ssh_pki.host(ca=ssh_pki.new_key("ed25519"))
    transcript = await refused(
        ssh_pki, host_services, node, "not signed by a trusted certificate authority"
    )
    assert transcript.exchanges == []


async def test_a_user_certificate_is_refused(ssh_pki: Any, host_services: HostServices) -> None:
    node = ssh_pki.host(cert_type=serialization.SSHCertificateType.USER)
    await refused(ssh_pki, host_services, node, "is a user certificate")


async def test_a_certificate_without_principals_is_refused(
    ssh_pki: Any, host_services: HostServices
) -> None:
    await refused(ssh_pki, host_services, ssh_pki.host(principals=()), "names no principal")


async def test_a_principal_outside_the_canonical_domain_is_refused(
    ssh_pki: Any, host_services: HostServices
) -> None:
    node = ssh_pki.host(principals=("node1.evil.org", "node1.example.org"))
    await refused(
        ssh_pki,
        host_services,
        node,
        r"principal 'node1.evil.org' is not in domain '\.example\.org'",
        canonical_domain="example.org",
    )


async def test_critical_options_are_refused(ssh_pki: Any, host_services: HostServices) -> None:
    node = ssh_pki.host(critical_options=[(b"force-command", b"/bin/true")])
    await refused(ssh_pki, host_services, node, "critical option 'force-command'")


@pytest.mark.parametrize(
    ("after", "before", "message"),
    [
        (timedelta(days=-3), timedelta(days=-1), "expired at 2029-12-31"),
        (timedelta(days=1), timedelta(days=3), "not valid before 2030-01-02"),
        (timedelta(hours=-1), timedelta(0), "expired at 2030-01-01T00:00:00"),
    ],
    ids=["expired", "not-yet-valid", "ends-now"],
)
async def test_a_certificate_outside_its_validity_is_refused(
    ssh_pki: Any,
    host_services: HostServices,
    fake_clock: FakeClock,
    after: timedelta,
    before: timedelta,
    message: str,
) -> None:
    now = fake_clock.now()
    node = ssh_pki.host(valid_after=now + after, valid_before=now + before)
    await refused(ssh_pki, host_services, node, message)


async def test_a_signature_without_the_host_key_is_refused(
    ssh_pki: Any, host_services: HostServices
) -> None:
    node = ssh_pki.host()
    server = await make_server(host_services, ssh_pki)
    payload = await (await make_agent(host_services, node)).attestation_payload()
    thief = ssh_pki.new_key("ed25519")

    async def answer(challenge: bytes) -> bytes:
        server_nonce = base64.b64decode(json.loads(challenge)["Nonce"])
        agent_nonce = bytes(32)
        return encode_answer(agent_nonce, sign(thief, combined_digest(server_nonce, agent_nonce)))

    with pytest.raises(PermissionDeniedError, match="ssh-ed25519 signature does not verify"):
        await server.attest(payload, answer)


async def test_a_replayed_answer_is_refused(ssh_pki: Any, host_services: HostServices) -> None:
    server = await make_server(host_services, ssh_pki)
    transcript = Transcript()
    await run_attestation(
        server, await make_agent(host_services, ssh_pki.host()), transcript=transcript
    )
    [(_, recorded)] = transcript.exchanges

    async def replay(challenge: bytes) -> bytes:
        return recorded

    with pytest.raises(PermissionDeniedError, match="does not verify"):
        await server.attest(transcript.payload, replay)


async def test_a_signature_of_another_algorithm_is_refused(
    ssh_pki: Any, host_services: HostServices
) -> None:
    node = ssh_pki.host(kind="p256")
    server = await make_server(host_services, ssh_pki)

    def as_ed25519(answer: bytes) -> bytes:
        document = json.loads(answer)
        document["Signature"]["Format"] = "ssh-ed25519"
        return json.dumps(document).encode()

    with pytest.raises(PermissionDeniedError, match="does not fit the certificate's ECDSA"):
        await run_attestation(
            server, await make_agent(host_services, node), alter_answer=as_ed25519
        )


async def test_rsa_signatures_spire_agents_make_verify(
    ssh_pki: Any, host_services: HostServices
) -> None:
    """Go's SSH library signs with SHA-1 ``ssh-rsa`` by default, others with SHA-512."""
    node = ssh_pki.host(kind="rsa")
    server = await make_server(host_services, ssh_pki)
    payload = await (await make_agent(host_services, node)).attestation_payload()
    assert isinstance(node.key, rsa.RSAPrivateKey)
    for name, algorithm in (("ssh-rsa", hashes.SHA1()), ("rsa-sha2-512", hashes.SHA512())):  # noqa: S303

        async def answer(challenge: bytes, name: str = name, algorithm: Any = algorithm) -> bytes:
            server_nonce = base64.b64decode(json.loads(challenge)["Nonce"])
            digest = combined_digest(server_nonce, b"a" * 32)
            blob = node.key.sign(digest, padding.PKCS1v15(), algorithm)
            return encode_answer(b"a" * 32, Signature(name, blob))

        result = await server.attest(payload, answer)
        assert result.agent_id == agent_path(f"sshpop/{fingerprint(node.blob)}")


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b'{"Certificate":null}', InvalidArgumentError, "no certificate in the payload"),
        (b'{"Certificate":"AAAA"}', InvalidArgumentError, "truncated"),
        (b'{"certificate":"AAAA"}', InvalidArgumentError, "payload.Certificate is missing"),
    ],
)
async def test_malformed_payloads_are_named(
    ssh_pki: Any, host_services: HostServices, payload: bytes, error: type, message: str
) -> None:
    server = await make_server(host_services, ssh_pki)
    with pytest.raises(error, match=message):
        await server.attest(payload, _no_challenge)


async def test_a_plain_public_key_is_no_certificate(
    ssh_pki: Any, host_services: HostServices
) -> None:
    server = await make_server(host_services, ssh_pki)
    key = ssh_pki.new_key("ed25519").public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    payload = json.dumps({"Certificate": line.split()[1].decode()}).encode()
    with pytest.raises(InvalidArgumentError, match="'ssh-ed25519', not an SSH certificate"):
        await server.attest(payload, _no_challenge)


async def _no_challenge(challenge: bytes) -> bytes:
    raise AssertionError("no challenge expected")


# -- the wire, as SPIRE writes it -------------------------------------------------------------


async def test_messages_have_spires_field_names(ssh_pki: Any, host_services: HostServices) -> None:
    node = ssh_pki.host()
    transcript = Transcript()
    await run_attestation(
        await make_server(host_services, ssh_pki),
        await make_agent(host_services, node),
        transcript=transcript,
    )
    assert json.loads(transcript.payload) == {"Certificate": base64.b64encode(node.blob).decode()}
    [(challenge, answer)] = transcript.exchanges
    assert list(json.loads(challenge)) == ["Nonce"]
    assert len(base64.b64decode(json.loads(challenge)["Nonce"])) == 32
    document = json.loads(answer)
    assert list(document) == ["Nonce", "Signature"]
    assert document["Signature"]["Format"] == "ssh-ed25519"
    assert document["Signature"]["Rest"] is None
    assert len(base64.b64decode(document["Signature"]["Blob"])) == 64


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ({}, "cert_authorities", "no certificate authority to trust"),
        (
            {"cert_authorities": ["x"], "agent_path_template": "{{ .A | b }}"},
            "agent_path_template",
            "not supported",
        ),
        ({"cert_authorities": "ssh-ed25519 AAAA"}, "cert_authorities", "expected an array"),
    ],
)
def test_bad_server_settings_are_named_with_their_key(
    table: dict[str, object], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(SshPopServerConfig, table, path="server.plugins.node_attestor.sshpop")
    [issue] = raised.value.issues
    assert issue.path == f"server.plugins.node_attestor.sshpop.{path}"
    assert message in issue.message


async def test_unreadable_cas_fail_configure_naming_the_setting(
    ssh_pki: Any, host_services: HostServices, tmp_path: Path
) -> None:
    with pytest.raises(PluginError, match="cert_authorities, line 1: no SSH public key"):
        await make_server(host_services, ssh_pki, cert_authorities=("ssh-ed25519 not-base64",))
    with pytest.raises(PluginError, match="cert_authorities_path: cannot read"):
        await make_server(host_services, ssh_pki, cert_authorities_path=tmp_path / "missing")
    empty = tmp_path / "empty.pub"
    empty.write_text("# nothing\n")
    with pytest.raises(PluginError, match="holds no key"):
        await make_server(host_services, ssh_pki, cert_authorities=(), cert_authorities_path=empty)


async def test_the_agent_checks_its_key_against_its_certificate(
    ssh_pki: Any, host_services: HostServices, tmp_path: Path
) -> None:
    first, second = ssh_pki.host(name="one"), ssh_pki.host(name="two")
    agent = AgentSshPopAttestor()
    with pytest.raises(PluginError, match="host_key_path does not hold the key of host_cert_path"):
        await agent.configure(
            SshPopAgentConfig(host_key_path=first.key_path, host_cert_path=second.cert_path),
            host_services,
        )
    plain = tmp_path / "plain.pub"
    plain.write_bytes(
        first.key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    with pytest.raises(PluginError, match="holds a public key, not a certificate"):
        await agent.configure(
            SshPopAgentConfig(host_key_path=first.key_path, host_cert_path=plain), host_services
        )
    with pytest.raises(PluginError, match="host_key_path: cannot read"):
        await agent.configure(
            SshPopAgentConfig(host_key_path=tmp_path / "none", host_cert_path=first.cert_path),
            host_services,
        )


async def test_the_agent_reads_pem_host_keys(ssh_pki: Any, host_services: HostServices) -> None:
    node = ssh_pki.host(kind="rsa")
    node.key_path.write_bytes(
        node.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    await run_attestation(
        await make_server(host_services, ssh_pki), await make_agent(host_services, node)
    )


def test_both_halves_register_under_one_name() -> None:
    [server] = pyspire_server_node_attestors()
    [agent] = pyspire_agent_node_attestors()
    assert server.name == agent.name == "sshpop"
    assert isinstance(server.factory(), ServerNodeAttestor)
    assert isinstance(agent.factory(), AgentNodeAttestor)


def test_the_readme_shows_both_settings_tables() -> None:
    assert_readme_documents(README, SshPopServerConfig, SshPopAgentConfig)
