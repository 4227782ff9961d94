"""Notifiers, bundle publishers and credential composers in a real ``pyspire-server`` process,
each a plugin installed as a distribution and found through its entry point.

The test plugins (``testplugins/pyspire_testplugins``) write what happens to them into files:
the ``journal`` notifier every event, the ``journal_file`` publisher every publish (failing the
first of each, so the retry shows), and the ``shaping`` composer marks every credential with the
kind of credential it composed (``OU=<kind>`` and an extension). The real ``uniqueid`` composer
runs after it. One server and one agent serve the module; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpclib.client import Channel
from processes import (
    START_TIMEOUT,
    TRUST_DOMAIN,
    AgentProcess,
    AgentSettings,
    Deployment,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    install_test_plugins,
    join_token_agent_id,
    run_workload,
    short_temp_dir,
    wait_for,
)

from pyspire.proto.gen.spire.api import types as types_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import TestAuthority

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"
MARK_OID = x509.ObjectIdentifier("1.3.6.1.4.1.99999.7")
UNIQUE_ID_OID = x509.ObjectIdentifier("2.5.4.45")
SHAPED_DNS = "shaped.example.org"
WAIT = 20.0


def plugin_tables(root: Path, *, refuse_start: str = "") -> str:
    refuse = f'refuse_start = "{refuse_start}"\n' if refuse_start else ""
    return f"""
[server.plugins.notifier.journal]
journal_path = "{root / "notifier.jsonl"}"
fail_updates = 1
{refuse}
[server.plugins.bundle_publisher.journal_file]
bundle_path = "{root / "published.json"}"
journal_path = "{root / "publisher.jsonl"}"
fail_first = 1

[server.plugins.credential_composer.shaping]
dns_name = "{SHAPED_DNS}"
workload_ttl = "7m"
jwt_claims = {{ tenant = "blue" }}

[server.plugins.credential_composer.uniqueid]
"""


def journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def events(path: Path) -> list[tuple[str, int]]:
    return [(record["event"], record["sequence"]) for record in journal(path)]


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """A server with the test plugins and ``uniqueid``, and a join-token agent with one entry
    (``/web``) for this test process's uid."""
    root = short_temp_dir()
    site = install_test_plugins(root / "site")
    server = ServerProcess(
        ServerSettings(
            root=root,
            port=free_port(),
            extra_plugins=plugin_tables(root),
            python_path=(site,),
        )
    )
    agent = AgentProcess(
        AgentSettings(
            root=root, server_port=server.settings.port, bootstrap_bundle=root / "bootstrap.pem"
        )
    )
    deployed = Deployment(root=root, server=server, agent=agent, token="", agent_id="")
    try:
        server.start()
        server.write_bundle(root / "bootstrap.pem")
        deployed.token = server.generate_token()
        deployed.agent_id = join_token_agent_id(deployed.token)
        server.create_entry(WEB, deployed.agent_id, f"unix:uid:{os.getuid()}")
        agent.start(join_token=deployed.token)
    except ProcessError as error:
        logs = deployed.logs()
        deployed.stop()
        pytest.fail(f"the deployment did not start: {str(error).splitlines()[0]}\n{logs}")
    except BaseException:
        deployed.stop()
        raise
    try:
        yield deployed
    finally:
        deployed.stop()


def shown_bundle(server: ServerProcess) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(server.cli("bundle", "show", "-format", "spiffe").stdout)
    return document


def mark(certificate: x509.Certificate) -> str:
    """The kind the shaping composer marked ``certificate`` with, in the subject and the
    extension (they must agree)."""
    [unit] = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    extension = certificate.extensions.get_extension_for_oid(MARK_OID).value
    value: bytes = extension.value  # type: ignore[attr-defined]
    assert value == b"\x0c" + bytes([len(unit.value)]) + str(unit.value).encode()
    return str(unit.value)


def test_the_notifier_is_told_the_loaded_bundle_at_start(deployment: Deployment) -> None:
    sequence = shown_bundle(deployment.server)["spiffe_sequence"]
    assert events(deployment.root / "notifier.jsonl")[0] == ("bundle_loaded", sequence)


def test_the_publisher_publishes_the_bundle_at_start_and_retries_a_failure(
    deployment: Deployment,
) -> None:
    root = deployment.root
    wait_for(
        "the first bundle to be published",
        lambda: True if (root / "published.json").exists() else None,
        WAIT,
        deployment.server.log(),
    )
    shown = shown_bundle(deployment.server)
    sequence = shown["spiffe_sequence"]
    assert events(root / "publisher.jsonl") == [("failed", sequence), ("published", sequence)]
    assert json.loads((root / "published.json").read_text()) == shown


async def test_a_bundle_change_reaches_the_notifier_and_the_publisher(
    deployment: Deployment,
) -> None:
    root = deployment.root
    before = shown_bundle(deployment.server)["spiffe_sequence"]
    extra = TestAuthority(TrustDomain(TRUST_DOMAIN))
    channel = Channel(path=str(deployment.server.socket_path))
    try:
        appended = await bundle_pb.BundleStub(channel).append_bundle(
            bundle_pb.AppendBundleRequest(x509_authorities=[types_pb.X509Certificate(extra.der)])
        )
    finally:
        channel.close()
    after = appended.sequence_number
    assert after == before + 1

    def told() -> bool | None:
        return True if ("bundle_updated", after) in events(root / "notifier.jsonl") else None

    def published() -> bool | None:
        return True if ("published", after) in events(root / "publisher.jsonl") else None

    await asyncio.to_thread(wait_for, "the notifier to be told", told, WAIT, "")
    await asyncio.to_thread(wait_for, "the bundle to be published", published, WAIT, "")
    # The notifier failed the update once and was told it again after its backoff.
    assert events(root / "notifier.jsonl")[1:] == [("failed", after), ("bundle_updated", after)]
    document = json.loads((root / "published.json").read_text())
    assert document["spiffe_sequence"] == after
    assert len([key for key in document["keys"] if key["use"] == "x509-svid"]) == 2


def leaf_of(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem.encode())[0]


def server_certificate(port: int) -> x509.Certificate:
    """The certificate the server presents on its TCP listener (its own X509-SVID)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_composers_shape_the_ca_and_every_kind_of_svid(deployment: Deployment) -> None:
    server = deployment.server
    ca = leaf_of(server.cli("bundle", "show", "-format", "pem").stdout)
    assert mark(ca) == "ca"

    own = await asyncio.to_thread(server_certificate, server.settings.port)
    assert mark(own) == "server"
    own.verify_directly_issued_by(ca)

    state = json.loads((deployment.agent.settings.data_dir / "agent-data.json").read_text())
    agent_svid = leaf_of(state["svid"])
    assert mark(agent_svid) == "agent"
    assert agent_svid.subject.get_attributes_for_oid(UNIQUE_ID_OID) == []  # workloads only

    out = deployment.root / "workload"
    out.mkdir()
    await asyncio.to_thread(run_workload, deployment.agent.endpoint, "x509", str(out))
    workload = leaf_of((out / "svid.pem").read_text())
    assert mark(workload) == "workload"
    [unique] = workload.subject.get_attributes_for_oid(UNIQUE_ID_OID)
    assert unique.value == hashlib.sha256(WEB.encode()).hexdigest()[:32]
    assert [a.oid for a in workload.subject][-1] == NameOID.COMMON_NAME  # CN after uniqueid
    assert workload.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SHAPED_DNS
    san = workload.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    assert san.get_values_for_type(x509.DNSName) == [SHAPED_DNS]
    lifetime = workload.not_valid_after_utc - workload.not_valid_before_utc
    assert lifetime == timedelta(minutes=7, seconds=10)  # notBefore is backdated 10 s
    workload.verify_directly_issued_by(ca)


def test_minted_svids_are_composed_as_workloads(deployment: Deployment) -> None:
    server = deployment.server
    minted = deployment.root / "minted"
    server.cli(
        "x509", "mint", "-spiffeID", f"spiffe://{TRUST_DOMAIN}/minted", "-write", str(minted)
    )
    leaf = leaf_of((minted / "svid.pem").read_text())
    assert mark(leaf) == "workload"
    assert leaf.subject.get_attributes_for_oid(UNIQUE_ID_OID)
    token = server.cli(
        "jwt", "mint", "-spiffeID", f"spiffe://{TRUST_DOMAIN}/minted", "-audience", "db"
    ).stdout.strip()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["tenant"] == "blue"
    assert claims["sub"] == f"spiffe://{TRUST_DOMAIN}/minted"


def test_a_notifier_refusing_the_loaded_bundle_stops_the_start() -> None:
    root = short_temp_dir()
    try:
        site = install_test_plugins(root / "site")
        server = ServerProcess(
            ServerSettings(
                root=root,
                port=free_port(),
                extra_plugins=plugin_tables(root, refuse_start="no config map to write to"),
                python_path=(site,),
            )
        )
        server.launch()
        code = server.wait(START_TIMEOUT)
        log = server.log()
        assert code == 1, log
        assert (
            'pyspire-server: error: notifier "journal" refused the trust bundle loaded at start: '
            "no config map to write to"
        ) in log
        assert not server.socket_path.exists()
        assert not (root / "published.json").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
