"""``federation create|list|show|update|delete|refresh`` against a real server."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import AdminServer, ca_pem


async def test_federation_commands(server: AdminServer, tmp_path: Path) -> None:
    assert (await server.cli("federation", "list")).out == "Found 0 federation relationships\n"
    anchor = tmp_path / "partner.pem"
    anchor.write_text(ca_pem("partner.org"))
    created = await server.cli(
        "federation",
        "create",
        "-trustDomain",
        "partner.org",
        "-bundleEndpointURL",
        "https://127.0.0.1:1/",
        "-endpointSpiffeID",
        "spiffe://partner.org/spire/server",
        "-trustDomainBundlePath",
        str(anchor),
    )
    assert created.status == 0, created.err
    assert "Bundle endpoint profile   : https_spiffe" in created.out
    # The bundle came with the relationship.
    assert (await server.cli("bundle", "list", "-id", "partner.org")).status == 0

    data = {
        "federation_relationships": [
            {
                "trust_domain": "web.org",
                "bundle_endpoint_url": "https://web.org/bundle",
                "https_web": {},
            },
            {"trust_domain": "bad.org", "bundle_endpoint_url": "http://bad.org"},
        ]
    }
    many = await server.cli("federation", "create", "-data", "-", stdin=json.dumps(data))
    assert many.status == 1
    assert "bundle_endpoint_url" in many.err and "Trust domain              : web.org" in many.out

    listed = await server.cli("federation", "list")
    assert listed.out.startswith("Found 2 federation relationships\n")
    shown = await server.cli("federation", "show", "-trustDomain", "web.org")
    assert "Bundle endpoint URL       : https://web.org/bundle" in shown.out
    as_json = (
        await server.cli("federation", "show", "-trustDomain", "web.org", "-output", "json")
    ).json()
    assert as_json["bundle_endpoint_url"] == "https://web.org/bundle"

    updated = await server.cli(
        "federation",
        "update",
        "-trustDomain",
        "web.org",
        "-bundleEndpointURL",
        "https://web.org/other",
        "-bundleEndpointProfile",
        "https_web",
    )
    assert updated.status == 0, updated.err
    assert "https://web.org/other" in updated.out

    # Nothing listens on port 1: the refresh fails, and says why.
    refreshed = await server.cli("federation", "refresh", "-id", "partner.org")
    assert refreshed.status == 1
    assert "127.0.0.1:1" in refreshed.err

    deleted = await server.cli("federation", "delete", "-id", "web.org")
    assert (deleted.status, deleted.out) == (0, "federation relationship deleted.\n")
    missing = await server.cli("federation", "show", "-trustDomain", "web.org")
    assert missing.status == 1 and "not found" in missing.err

    no_id = await server.cli(
        "federation", "create", "-trustDomain", "x.org", "-bundleEndpointURL", "https://x.org"
    )
    assert no_id.status == 1 and "-endpointSpiffeID" in no_id.err
