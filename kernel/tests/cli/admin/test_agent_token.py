"""``token generate`` and ``agent list|show|count|ban|evict`` against a real server, with an
agent attested over the TCP listener the way a real agent does it."""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path

from .conftest import AdminServer

TOKEN_LINE = re.compile(r"Token: ([0-9a-f-]{36})\n")


async def generate(server: AdminServer, *extra: str) -> str:
    result = await server.cli("token", "generate", *extra)
    assert result.status == 0, result.err
    match = TOKEN_LINE.fullmatch(result.out)
    assert match is not None, result.out
    return match.group(1)


async def test_token_generate_with_alias_creates_the_entry(server: AdminServer) -> None:
    token = await generate(server, "-spiffeID", "spiffe://example.org/host", "-ttl", "60")
    shown = await server.cli("entry", "show", "-output", "json")
    [entry] = shown.json()["entries"]
    assert entry["spiffe_id"]["path"] == "/host"
    assert entry["parent_id"]["path"] == f"/spire/agent/join_token/{token}"
    assert entry["selectors"] == [
        {"type": "spiffe_id", "value": f"spiffe://example.org/spire/agent/join_token/{token}"}
    ]


async def test_token_generate_json_and_errors(server: AdminServer) -> None:
    result = await server.cli("token", "generate", "-output", "json")
    assert result.status == 0, result.err
    document = result.json()
    assert len(document["value"]) == 36
    assert int(document["expires_at"]) > 0
    bad_ttl = await server.cli("token", "generate", "-ttl", "0")
    assert bad_ttl.status == 1
    assert bad_ttl.err == (
        "pyspire-server: error: invalid -ttl: '0' is out of range (1s to 2147483647s)\n"
    )
    bad_id = await server.cli("token", "generate", "-spiffeID", "example.org/host")
    assert bad_id.status == 1
    assert bad_id.err.startswith("pyspire-server: error: invalid -spiffeID: invalid SPIFFE ID")
    foreign = await server.cli("token", "generate", "-spiffeID", "spiffe://other.org/host")
    assert foreign.status == 1
    assert "agent_id" in foreign.err and "other.org" in foreign.err


async def test_agent_lifecycle(server: AdminServer) -> None:
    empty = await server.cli("agent", "list")
    assert (empty.status, empty.out) == (0, "No attested agents found\n")
    token = await generate(server)
    svid = await server.attest_agent(token)
    agent_id = f"spiffe://example.org/spire/agent/join_token/{token}"
    assert f"spiffe://{svid.id.trust_domain}{svid.id.path}" == agent_id

    listed = await server.cli("agent", "list")
    assert listed.status == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[0] == "Found 1 attested agent:"
    assert f"SPIFFE ID        : {agent_id}" in lines
    assert "Attestation type : join_token" in lines
    assert "Can re-attest    : false" in lines
    assert "Banned           : false" in lines

    document = (await server.cli("agent", "list", "-output", "json")).json()
    [agent] = document["agents"]
    assert agent["attestation_type"] == "join_token"
    assert agent["x509svid_serial_number"]
    assert int(agent["x509svid_expires_at"]) > 0

    async def count(*filters: str) -> str:
        result = await server.cli("agent", "count", *filters)
        assert result.status == 0, result.err
        return result.out

    assert await count() == "1 attested agent\n"
    assert await count("-attestationType", "join_token") == "1 attested agent\n"
    assert await count("-attestationType", "x509pop") == "0 attested agents\n"
    assert await count("-banned", "true") == "0 attested agents\n"
    assert await count("-canReattest", "false") == "1 attested agent\n"

    shown = await server.cli("agent", "show", "-spiffeID", agent_id)
    assert shown.status == 0, shown.err
    assert f"SPIFFE ID        : {agent_id}" in shown.out

    banned = await server.cli("agent", "ban", "-spiffeID", agent_id)
    assert (banned.status, banned.out) == (0, "Agent banned successfully\n")
    assert await count("-banned", "true") == "1 attested agent\n"
    shown_json = (
        await server.cli("agent", "show", "-spiffeID", agent_id, "-output", "json")
    ).json()
    assert shown_json["banned"] is True

    evicted = await server.cli("agent", "evict", "-spiffeID", agent_id)
    assert (evicted.status, evicted.out) == (0, "Agent evicted successfully\n")
    assert await count() == "0 attested agents\n"
    gone = await server.cli("agent", "show", "-spiffeID", agent_id)
    assert gone.status == 1
    assert gone.err == f"pyspire-server: error: agent '{agent_id}' not found\n"


async def test_agent_errors_name_the_problem(server: AdminServer) -> None:
    unknown = "spiffe://example.org/spire/agent/join_token/nope"
    for command in ("show", "ban", "evict"):
        result = await server.cli("agent", command, "-spiffeID", unknown)
        assert result.status == 1, command
        assert result.err == f"pyspire-server: error: agent '{unknown}' not found\n"
    not_agent = await server.cli("agent", "show", "-spiffeID", "spiffe://example.org/workload")
    assert not_agent.status == 1
    assert "is not an agent ID" in not_agent.err
    invalid = await server.cli("agent", "ban", "-spiffeID", "nope")
    assert invalid.err.startswith("pyspire-server: error: invalid -spiffeID: invalid SPIFFE ID")
    bad_bool = await server.cli("agent", "list", "-banned", "maybe")
    assert bad_bool.status == 2
    assert "expected true or false" in bad_bool.err
    missing = await server.cli("agent", "show")
    assert missing.status == 2
    assert "-spiffeID" in missing.err
    bad_selector = await server.cli("agent", "list", "-selector", "x")
    assert bad_selector.status == 1
    assert bad_selector.err.startswith("pyspire-server: error: invalid -selector:")


async def test_token_ttl_takes_a_duration(server: AdminServer) -> None:
    before = int(time.time())
    result = await server.cli("token", "generate", "-ttl", "1h", "-output", "json")
    assert result.status == 0, result.err
    expires_at = int(result.json()["expires_at"])
    assert before + 3600 <= expires_at <= int(time.time()) + 3600


async def test_token_written_to_a_private_file(server: AdminServer, tmp_path: Path) -> None:
    path = tmp_path / "join-token"
    path.write_text("old\n")
    path.chmod(0o644)
    result = await server.cli("token", "generate", "-write", str(path))
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"Token written to {path}"
    assert lines[1].startswith("Expires at ")
    token = path.read_text()
    assert re.fullmatch(r"[0-9a-f-]{36}\n", token)
    assert token.strip() not in result.out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = await server.cli("token", "generate", "-write", str(tmp_path / "missing" / "t"))
    assert listed.status == 1
    assert listed.err.startswith("pyspire-server: error: invalid -write: cannot write ")
