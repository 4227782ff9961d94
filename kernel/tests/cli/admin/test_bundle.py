"""``bundle show|list|set|delete|count`` against a real server."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from pyspire_sdk.bundle import Bundle
from pyspire_sdk.spiffeid import TrustDomain

from .conftest import AdminServer, ca_pem


async def test_show_prints_our_bundle_as_pem_spiffe_or_json(server: AdminServer) -> None:
    pem = await server.cli("bundle", "show")
    assert pem.status == 0, pem.err
    certificates = x509.load_pem_x509_certificates(pem.out.encode())
    assert len(certificates) == 1
    assert certificates[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    spiffe = await server.cli("bundle", "show", "-format", "spiffe")
    assert spiffe.status == 0, spiffe.err
    bundle = Bundle.from_spiffe_json(TrustDomain("example.org"), spiffe.out)
    assert [a.certificate() for a in bundle.x509_authorities] == certificates
    assert len(bundle.jwt_authorities) == 1

    document = (await server.cli("bundle", "show", "-output", "json")).json()
    assert document["trust_domain"] == "example.org"
    assert len(document["x509_authorities"]) == 1
    assert len(document["jwt_authorities"]) == 1


async def test_federated_bundle_set_list_count_delete(server: AdminServer, tmp_path: Path) -> None:
    assert (await server.cli("bundle", "list")).out == "No federated bundles found\n"
    anchor = tmp_path / "partner.pem"
    anchor.write_text(ca_pem("partner.org"))
    result = await server.cli("bundle", "set", "-id", "spiffe://partner.org", "-path", str(anchor))
    assert (result.status, result.out) == (0, "bundle set.\n")

    # a SPIFFE document through standard input
    other = Bundle.from_pem(TrustDomain("other.org"), ca_pem("other.org"))
    stdin = await server.cli(
        "bundle", "set", "-id", "other.org", "-format", "spiffe", stdin=other.to_spiffe_json()
    )
    assert stdin.status == 0, stdin.err

    listed = await server.cli("bundle", "list")
    assert listed.status == 0, listed.err
    assert "* partner.org" in listed.out and "* other.org" in listed.out
    one = await server.cli("bundle", "list", "-id", "partner.org")
    assert one.out.strip() == anchor.read_text().strip()
    as_json = (await server.cli("bundle", "list", "-output", "json")).json()
    assert {b["trust_domain"] for b in as_json["bundles"]} == {"partner.org", "other.org"}
    assert (await server.cli("bundle", "count")).out == "3 bundles\n"

    deleted = await server.cli("bundle", "delete", "-id", "other.org")
    assert (deleted.status, deleted.out) == (0, "bundle deleted.\n")
    assert (await server.cli("bundle", "count", "-output", "json")).json() == {"count": 2}


async def test_bundle_delete_modes_and_errors(server: AdminServer, tmp_path: Path) -> None:
    anchor = tmp_path / "partner.pem"
    anchor.write_text(ca_pem("partner.org"))
    assert (
        await server.cli("bundle", "set", "-id", "partner.org", "-path", str(anchor))
    ).status == 0
    created = await server.cli(
        "entry",
        "create",
        "-spiffeID",
        "spiffe://example.org/w",
        "-parentID",
        "spiffe://example.org/spire/server",
        "-selector",
        "a:b",
        "-federatesWith",
        "partner.org",
    )
    assert created.status == 0, created.err
    restricted = await server.cli("bundle", "delete", "-id", "partner.org")
    assert restricted.status == 1
    assert restricted.err.startswith("pyspire-server: error: failed precondition: ")
    dissociated = await server.cli("bundle", "delete", "-id", "partner.org", "-mode", "dissociate")
    assert dissociated.status == 0, dissociated.err
    entry = (await server.cli("entry", "show", "-output", "json")).json()["entries"][0]
    assert entry["federates_with"] == []

    missing = await server.cli("bundle", "delete", "-id", "nowhere.org")
    assert missing.status == 1
    assert missing.err.startswith("pyspire-server: error: not found: ")
    own = await server.cli("bundle", "set", "-id", "example.org", "-path", str(anchor))
    assert own.status == 1
    assert "own trust domain" in own.err
    unknown = await server.cli("bundle", "list", "-id", "nowhere.org")
    assert unknown.err == "pyspire-server: error: bundle for 'nowhere.org' not found\n"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    bad = await server.cli("bundle", "set", "-id", "partner.org", "-path", str(garbage))
    assert bad.err == (
        "pyspire-server: error: invalid bundle (pem): pem bundle has no CERTIFICATE block\n"
    )
    bad_json = await server.cli(
        "bundle", "set", "-id", "partner.org", "-format", "spiffe", stdin="{}"
    )
    assert bad_json.status == 1
    assert bad_json.err.startswith("pyspire-server: error: invalid bundle (spiffe): ")
    absent = await server.cli("bundle", "set", "-id", "partner.org", "-path", str(tmp_path / "no"))
    assert absent.err.startswith("pyspire-server: error: invalid -path: file ")
    bad_id = await server.cli("bundle", "delete", "-id", "Not A Domain")
    assert bad_id.err.startswith("pyspire-server: error: invalid -id: ")
