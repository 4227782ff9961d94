"""``localauthority x509|jwt ...`` and ``upstreamauthority ...`` against a real server: the
forced rotation sequence through the CLI, SPIRE's output and errors."""

from __future__ import annotations

import re

from .conftest import AdminServer

_ID = re.compile(r"  Authority ID: (\S+)")


async def _ids(server: AdminServer, kind: str) -> dict[str, str]:
    document = (await server.cli("localauthority", kind, "show", "-output", "json")).json()
    return {name: document[name]["authority_id"] for name in ("active", "prepared", "old")}


async def test_x509_forced_rotation_through_the_cli(server: AdminServer) -> None:
    shown = await server.cli("localauthority", "x509", "show")
    assert shown.status == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0] == "Active X.509 authority:"
    assert lines[3] == "  Upstream authority ID: No upstream authority"
    assert lines[4:] == [
        "",
        "Prepared X.509 authority:",
        "  No prepared X.509 authority found",
        "",
        "Old X.509 authority:",
        "  No old X.509 authority found",
    ]
    first = _ID.match(lines[1])
    assert first is not None
    old_id = first.group(1)

    missing = await server.cli("localauthority", "x509", "activate")
    assert (missing.status, missing.err.strip()) == (
        1,
        "pyspire-server: error: an authority ID is required",
    )

    prepared = await server.cli("localauthority", "x509", "prepare")
    assert prepared.status == 0, prepared.err
    assert prepared.out.splitlines()[0] == "Prepared X.509 authority:"
    new_id = (await _ids(server, "x509"))["prepared"]
    assert new_id and new_id != old_id

    early = await server.cli("localauthority", "x509", "taint", "-authorityID", new_id)
    assert early.status == 1
    assert early.err.strip() == (
        "pyspire-server: error: could not taint X.509 authority: "
        "only Old local authorities can be tainted: unsupported local authority status: PREPARED"
    )
    activated = await server.cli("localauthority", "x509", "activate", "-authorityID", new_id)
    assert activated.out.splitlines()[:2] == [
        "Activated X.509 authority:",
        f"  Authority ID: {new_id}",
    ]
    assert await _ids(server, "x509") == {"active": new_id, "prepared": "", "old": old_id}

    tainted = await server.cli("localauthority", "x509", "taint", "-authorityID", old_id)
    assert tainted.out.splitlines()[:2] == ["Tainted X.509 authority:", f"  Authority ID: {old_id}"]
    bundle = (await server.cli("bundle", "show", "-output", "json")).json()
    assert sorted(a["tainted"] for a in bundle["x509_authorities"]) == [False, True]

    revoked = await server.cli("localauthority", "x509", "revoke", "--authority-id", old_id)
    assert revoked.out.splitlines()[:2] == ["Revoked X.509 authority:", f"  Authority ID: {old_id}"]
    bundle = (await server.cli("bundle", "show", "-output", "json")).json()
    assert [a["tainted"] for a in bundle["x509_authorities"]] == [False]


async def test_jwt_forced_rotation_through_the_cli(server: AdminServer) -> None:
    old_id = (await _ids(server, "jwt"))["active"]
    prepared = await server.cli("localauthority", "jwt", "prepare")
    assert prepared.status == 0, prepared.err
    new_id = (await _ids(server, "jwt"))["prepared"]
    active = await server.cli("localauthority", "jwt", "revoke", "-authorityID", old_id)
    assert (active.status, active.err.strip()) == (
        1,
        "pyspire-server: error: could not revoke JWT authority: invalid authority ID: "
        "unable to use current authority",
    )
    await server.cli("localauthority", "jwt", "activate", "-authorityID", new_id)
    shown = (await server.cli("localauthority", "jwt", "show")).out.splitlines()
    assert "Upstream" not in "\n".join(shown)
    assert shown[:2] == ["Active JWT authority:", f"  Authority ID: {new_id}"]
    tainted = await server.cli("localauthority", "jwt", "taint", "-authorityID", old_id)
    assert tainted.out.splitlines()[:2] == ["Tainted JWT authority:", f"  Authority ID: {old_id}"]
    revoked = await server.cli("localauthority", "jwt", "revoke", "-authorityID", old_id)
    assert revoked.status == 0, revoked.err
    bundle = (await server.cli("bundle", "show", "-output", "json")).json()
    assert [a["key_id"] for a in bundle["jwt_authorities"]] == [new_id]


async def test_upstream_commands_need_an_upstream_authority(server: AdminServer) -> None:
    missing = await server.cli("upstreamauthority", "taint")
    assert missing.err.strip() == (
        "pyspire-server: error: the Subject Key ID of the X.509 upstream authority is required"
    )
    refused = await server.cli("upstreamauthority", "revoke", "-subjectKeyID", "AB01")
    assert refused.status == 1
    assert refused.err.strip() == (
        "pyspire-server: error: could not revoke X.509 upstream authority: "
        "upstream authority is not configured"
    )
