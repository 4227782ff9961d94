"""``pyspire-agent api fetch [x509|jwt]`` against a Workload API served in the test."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyspire.der import elements

from .conftest import Agent
from .pki import FOREIGN, make_entry


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pem_certificates(path: Path) -> list[bytes]:
    return [
        certificate.public_bytes(serialization.Encoding.DER)
        for certificate in x509.load_pem_x509_certificates(path.read_bytes())
    ]


@pytest.fixture
def two_identities(agent: Agent) -> Agent:
    """The workload also has a federating identity with a hint, and the federated bundle."""
    first = agent.source.snapshot().identities[0]
    second = agent.pki.identity(
        make_entry("/db-client", hint="db", federates_with=[FOREIGN], age=10)
    )
    agent.source.publish(
        identities=(first, second), federated_bundles={FOREIGN: agent.pki.foreign_bundle()}
    )
    return agent


@pytest.mark.parametrize("argv", [("api", "fetch"), ("api", "fetch", "x509")])
async def test_fetch_x509_pretty(agent: Agent, argv: tuple[str, ...]) -> None:
    result = await agent.cli(*argv)
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("Received 1 svid after ")
    svid = agent.source.snapshot().identities[0].svid
    leaf = x509.load_der_x509_certificate(svid.cert_chain[0])
    ca = agent.pki.ca.certificate
    assert lines[1:] == [
        "",
        "SPIFFE ID:\t\tspiffe://example.org/workload",
        f"SVID Valid After:\t{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} +0000 UTC",
        f"SVID Valid Until:\t{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} +0000 UTC",
        "Bundle CAs:\t\t1",
        f"CA #1 Valid After:\t{ca.not_valid_before_utc:%Y-%m-%d %H:%M:%S} +0000 UTC",
        f"CA #1 Valid Until:\t{ca.not_valid_after_utc:%Y-%m-%d %H:%M:%S} +0000 UTC",
        "",
    ]
    assert result.err == ""


async def test_fetch_x509_shows_hints_and_federated_bundles(two_identities: Agent) -> None:
    result = await two_identities.cli("api", "fetch")
    assert result.status == 0, result.err
    assert result.out.startswith("Received 2 svids after ")
    blocks = result.out.split("\n\n")
    assert "SPIFFE ID:\t\tspiffe://example.org/workload" in blocks[1]
    assert "Hint:" not in blocks[1]
    assert "SPIFFE ID:\t\tspiffe://example.org/db-client\nHint:\t\t\tdb\n" in blocks[2]
    assert "[spiffe://foreign.test] CA #1 Valid After:\t" in blocks[2]
    assert "[spiffe://foreign.test] CA #1 Valid Until:\t" in blocks[2]


async def test_fetch_x509_json(two_identities: Agent) -> None:
    result = await two_identities.cli("api", "fetch", "x509", "-output", "json")
    assert result.status == 0, result.err
    document = result.json()
    snapshot = two_identities.source.snapshot()
    assert [svid["spiffe_id"] for svid in document["svids"]] == [
        "spiffe://example.org/workload",
        "spiffe://example.org/db-client",
    ]
    assert [svid["hint"] for svid in document["svids"]] == ["", "db"]
    first = document["svids"][0]
    assert base64.b64decode(first["x509_svid"]) == snapshot.identities[0].svid.cert_chain[0]
    assert base64.b64decode(first["x509_svid_key"]) == snapshot.identities[0].svid.private_key
    assert base64.b64decode(first["bundle"]) == two_identities.pki.ca.der
    assert base64.b64decode(document["federated_bundles"]["spiffe://foreign.test"]) == (
        two_identities.pki.foreign_ca.der
    )


async def test_fetch_x509_write(two_identities: Agent, tmp_path: Path) -> None:
    target = tmp_path / "out" / "svids"
    result = await two_identities.cli("api", "fetch", "-write", str(target))
    assert result.status == 0, result.err
    snapshot = two_identities.source.snapshot()
    assert sorted(path.name for path in target.iterdir()) == [
        "bundle.0.pem",
        "bundle.1.pem",
        "federated_bundle.0.0.pem",
        "federated_bundle.1.0.pem",
        "svid.0.key",
        "svid.0.pem",
        "svid.1.key",
        "svid.1.pem",
    ]
    for index, identity in enumerate(snapshot.identities):
        assert pem_certificates(target / f"svid.{index}.pem") == list(identity.svid.cert_chain)
        key = serialization.load_pem_private_key(
            (target / f"svid.{index}.key").read_bytes(), password=None
        )
        assert (
            key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            == identity.svid.private_key
        )
        assert mode(target / f"svid.{index}.key") == 0o600
        assert mode(target / f"svid.{index}.pem") == 0o644
        assert pem_certificates(target / f"bundle.{index}.pem") == [two_identities.pki.ca.der]
        assert mode(target / f"bundle.{index}.pem") == 0o644
        assert pem_certificates(target / f"federated_bundle.{index}.0.pem") == [
            two_identities.pki.foreign_ca.der
        ]
    assert f"Writing key #1 to file {target / 'svid.1.key'}." in result.out
    assert (
        "Writing federated bundle #0 for trust domain spiffe://foreign.test to file "
        f"{target / 'federated_bundle.0.0.pem'}." in result.out
    )
    assert "SPIFFE ID:" in result.out


async def test_write_makes_an_existing_key_file_private(agent: Agent, tmp_path: Path) -> None:
    key_path = tmp_path / "svid.0.key"
    key_path.write_text("old contents, readable by all")
    key_path.chmod(0o644)
    result = await agent.cli("api", "fetch", "--write", str(tmp_path), "--silent")
    assert result.status == 0, result.err
    assert mode(key_path) == 0o600
    assert key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    assert "SPIFFE ID:" not in result.out
    assert result.out.splitlines() == [
        f"Writing SVID #0 to file {tmp_path / 'svid.0.pem'}.",
        f"Writing key #0 to file {tmp_path / 'svid.0.key'}.",
        f"Writing bundle #0 to file {tmp_path / 'bundle.0.pem'}.",
    ]


async def test_write_into_a_file_fails_clearly(agent: Agent, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = await agent.cli("api", "fetch", "-write", str(blocker / "dir"))
    assert result.status == 1
    assert result.err.startswith(f"pyspire-agent: error: invalid -write: cannot create {blocker}")


async def test_silent_prints_nothing(agent: Agent) -> None:
    result = await agent.cli("api", "fetch", "x509", "-silent")
    assert (result.status, result.out, result.err) == (0, "", "")


async def test_kebab_flags(agent: Agent, tmp_path: Path) -> None:
    result = await agent.cli(
        "api", "fetch", "x509", "--output", "json", "--timeout", "2s", "--write", str(tmp_path)
    )
    assert result.status == 0, result.err
    assert result.json()["svids"][0]["spiffe_id"] == "spiffe://example.org/workload"
    assert (tmp_path / "svid.0.pem").exists()


async def test_flags_before_the_kind_are_kept(agent: Agent) -> None:
    result = await agent.cli("api", "fetch", "-output", "json", "x509")
    assert result.status == 0, result.err
    assert result.json()["svids"][0]["spiffe_id"] == "spiffe://example.org/workload"


def jwt_claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_fetch_jwt(two_identities: Agent) -> None:
    result = await two_identities.cli("api", "fetch", "jwt", "-audience", "db,cache")
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "token(spiffe://example.org/workload):"
    assert lines[2] == "token(spiffe://example.org/db-client):"
    for line, subject in ((lines[1], "workload"), (lines[3], "db-client")):
        assert line.startswith("\t")
        claims = jwt_claims(line.strip())
        assert claims["sub"] == f"spiffe://example.org/{subject}"
        assert claims["aud"] == ["db", "cache"]
    bundle_lines = lines[4:]
    assert bundle_lines[0] == "bundle(spiffe://example.org):"
    jwks = json.loads(bundle_lines[1].strip())
    assert [key["kid"] for key in jwks["keys"]] == [two_identities.pki.jwt.kid]
    assert "bundle(spiffe://foreign.test):" in bundle_lines


async def test_fetch_jwt_json_and_repeated_audience(agent: Agent) -> None:
    result = await agent.cli(
        "api", "fetch", "jwt", "--audience", "a", "--audience", "b,a", "--output", "json"
    )
    assert result.status == 0, result.err
    document = result.json()
    [svid] = document["svids"]
    assert svid["spiffe_id"] == "spiffe://example.org/workload"
    assert svid["hint"] == ""
    assert jwt_claims(svid["svid"])["aud"] == ["a", "b"]
    assert list(document["bundles"]) == ["spiffe://example.org"]
    assert document["bundles"]["spiffe://example.org"]["keys"][0]["kid"] == agent.pki.jwt.kid


async def test_fetch_jwt_for_one_spiffe_id(two_identities: Agent) -> None:
    result = await two_identities.cli(
        "api", "fetch", "jwt", "-audience", "db", "-spiffeID", "spiffe://example.org/db-client"
    )
    assert result.status == 0, result.err
    tokens = [line for line in result.out.splitlines() if line.startswith("token(")]
    assert tokens == ["token(spiffe://example.org/db-client):"]


async def test_fetch_jwt_for_an_id_the_caller_lacks(agent: Agent) -> None:
    result = await agent.cli(
        "api", "fetch", "jwt", "-audience", "db", "-spiffeID", "spiffe://example.org/other"
    )
    assert result.status == 1
    assert result.err == "pyspire-agent: error: no identity issued (permission denied)\n"


async def test_fetch_jwt_needs_an_audience(agent: Agent) -> None:
    for argv in (("api", "fetch", "jwt"), ("api", "fetch", "jwt", "-audience", " , ")):
        result = await agent.cli(*argv)
        assert result.status == 1
        assert result.err == (
            "pyspire-agent: error: -audience is required: give one or more, comma separated\n"
        )


async def test_fetch_jwt_refuses_an_invalid_spiffe_id(agent: Agent) -> None:
    result = await agent.cli("api", "fetch", "jwt", "-audience", "a", "-spiffeID", "nope")
    assert result.status == 1
    assert result.err.startswith("pyspire-agent: error: invalid -spiffeID: ")


async def test_fetch_jwt_refuses_x509_flags(agent: Agent, tmp_path: Path) -> None:
    result = await agent.cli("api", "fetch", "-write", str(tmp_path), "jwt", "-audience", "a")
    assert result.status == 1
    assert "-write and -silent apply to 'api fetch x509' only" in result.err


async def test_fetch_jwt_without_identity(agent: Agent) -> None:
    agent.source.publish(identities=())
    result = await agent.cli("api", "fetch", "jwt", "-audience", "a")
    assert result.status == 1
    assert result.err == "pyspire-agent: error: no identity issued (permission denied)\n"


def test_chain_helper_splits_concatenated_der(agent: Agent) -> None:
    """The DER helper the command relies on splits a bundle of several CAs."""
    both = agent.pki.ca.der + agent.pki.foreign_ca.der
    assert elements(both) == [agent.pki.ca.der, agent.pki.foreign_ca.der]
