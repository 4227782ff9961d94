"""``pyspire-agent api validate jwt`` against a Workload API served in the test."""

from __future__ import annotations

import json

from .conftest import Agent


async def token_for(agent: Agent, *audience: str) -> str:
    entry = agent.source.snapshot().identities[0].entry
    return (await agent.source.fetch_jwt_svid(entry, audience)).token


async def test_valid_token(agent: Agent) -> None:
    token = await token_for(agent, "db", "cache")
    result = await agent.cli("api", "validate", "jwt", "-audience", "db", "-svid", token)
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert lines[:2] == ["SVID is valid.", "SPIFFE ID : spiffe://example.org/workload"]
    assert lines[2].startswith("Claims    : ")
    claims = json.loads(lines[2].removeprefix("Claims    : "))
    assert claims["sub"] == "spiffe://example.org/workload"
    assert claims["aud"] == ["db", "cache"]
    assert isinstance(claims["exp"], int)


async def test_valid_token_json(agent: Agent) -> None:
    token = await token_for(agent, "db")
    result = await agent.cli(
        "api", "validate", "jwt", "--audience", "db", "--svid", token, "--output", "json"
    )
    assert result.status == 0, result.err
    document = result.json()
    assert document["spiffe_id"] == "spiffe://example.org/workload"
    assert document["claims"]["aud"] == ["db"]
    assert document["claims"]["sub"] == "spiffe://example.org/workload"


async def test_wrong_audience(agent: Agent) -> None:
    token = await token_for(agent, "db")
    result = await agent.cli("api", "validate", "jwt", "-audience", "other", "-svid", token)
    assert result.status == 1
    assert result.out == ""
    assert result.err.startswith("pyspire-agent: error: jwt-svid is not valid: ")
    assert "other" in result.err
    assert len(result.err.splitlines()) == 1


async def test_garbage_token(agent: Agent) -> None:
    result = await agent.cli("api", "validate", "jwt", "-audience", "db", "-svid", "not.a.token")
    assert result.status == 1
    assert result.err.startswith("pyspire-agent: error: jwt-svid is not valid: ")


async def test_audience_and_svid_are_required(agent: Agent) -> None:
    result = await agent.cli("api", "validate", "jwt", "-svid", "x")
    assert (result.status, result.err) == (
        1,
        "pyspire-agent: error: -audience is required: the audience the token must name\n",
    )
    result = await agent.cli("api", "validate", "jwt", "-audience", "db")
    assert (result.status, result.err) == (
        1,
        "pyspire-agent: error: -svid is required: the token to validate\n",
    )


async def test_no_identity_is_not_a_validation_verdict(agent: Agent) -> None:
    token = await token_for(agent, "db")
    agent.source.publish(identities=())
    result = await agent.cli("api", "validate", "jwt", "-audience", "db", "-svid", token)
    assert result.status == 1
    assert result.err == "pyspire-agent: error: no identity issued (permission denied)\n"


async def test_validate_needs_a_kind(agent: Agent) -> None:
    result = await agent.cli("api", "validate")
    assert result.status == 2
    assert "jwt" in result.err
