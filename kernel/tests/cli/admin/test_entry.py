"""``pyspire-server entry ...`` against a real server: create, show, update, count, delete,
batches from -data, and every error path with its one-line message."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sqlite3
from pathlib import Path

import pytest

from pyspire.catalog import Side
from pyspire.cli import CliContext, run_cli
from pyspire.cli import progress as progress_module

from .conftest import AdminServer, ca_pem

WORKLOAD = "spiffe://example.org/workload"
PARENT = "spiffe://example.org/spire/agent/join_token/abc"


async def create(server: AdminServer, *extra: str) -> dict[str, object]:
    result = await server.cli(
        "entry",
        "create",
        "-spiffeID",
        WORKLOAD,
        "-parentID",
        PARENT,
        "-selector",
        "unix:uid:1000",
        *extra,
        "-output",
        "json",
    )
    assert result.status == 0, result.err
    [item] = result.json()["results"]
    assert item["status"]["code"] == 0
    entry: dict[str, object] = item["entry"]
    return entry


async def test_create_prints_the_entry_and_show_finds_it(server: AdminServer) -> None:
    result = await server.cli(
        "entry",
        "create",
        "-spiffeID",
        WORKLOAD,
        "-parentID",
        PARENT,
        "-selector",
        "unix:uid:1000",
        "-selector",
        "unix:gid:50",
        "-dns",
        "web.example.org",
        "-x509SVIDTTL",
        "600",
        "--jwt-svid-ttl",
        "120",
        "-hint",
        "web",
        "-admin",
    )
    assert result.status == 0, result.err
    assert result.err == ""
    lines = result.out.splitlines()
    assert lines[0].startswith("Entry ID         : ")
    entry_id = lines[0].split(": ", 1)[1]
    assert "SPIFFE ID        : spiffe://example.org/workload" in lines
    assert f"Parent ID        : {PARENT}" in lines
    assert "Selector         : unix:uid:1000" in lines
    assert "Selector         : unix:gid:50" in lines
    assert "X509-SVID TTL    : 600" in lines
    assert "JWT-SVID TTL     : 120" in lines
    assert "DNS name         : web.example.org" in lines
    assert "Admin            : true" in lines
    assert "Hint             : web" in lines

    shown = await server.cli("entry", "show", "-entryID", entry_id)
    assert shown.status == 0, shown.err
    assert shown.out.splitlines()[0] == "Found 1 entry"
    assert f"Entry ID         : {entry_id}" in shown.out

    document = (await server.cli("entry", "show", "-output", "json")).json()
    [listed] = document["entries"]
    assert listed["id"] == entry_id
    assert listed["spiffe_id"] == {"trust_domain": "example.org", "path": "/workload"}
    assert listed["x509_svid_ttl"] == 600
    assert listed["admin"] is True
    assert {(s["type"], s["value"]) for s in listed["selectors"]} == {
        ("unix", "uid:1000"),
        ("unix", "gid:50"),
    }


async def test_node_entry_has_the_server_as_parent(server: AdminServer) -> None:
    result = await server.cli(
        "entry",
        "create",
        "-node",
        "-spiffeID",
        "spiffe://example.org/nodes/blue",
        "-selector",
        "join_token:abc",
        "-output",
        "json",
    )
    assert result.status == 0, result.err
    entry = result.json()["results"][0]["entry"]
    assert entry["parent_id"] == {"trust_domain": "example.org", "path": "/spire/server"}


async def test_show_filters_by_ids_selectors_and_hint(server: AdminServer, tmp_path: Path) -> None:
    anchor = tmp_path / "partner.pem"
    anchor.write_text(ca_pem("partner.org"))
    assert (
        await server.cli("bundle", "set", "-id", "partner.org", "-path", str(anchor))
    ).status == 0
    first = await create(server, "-hint", "one")
    other = await server.cli(
        "entry",
        "create",
        "-spiffeID",
        "spiffe://example.org/other",
        "-parentID",
        PARENT,
        "-selector",
        "unix:uid:2000",
        "-selector",
        "unix:gid:7",
        "-federatesWith",
        "spiffe://partner.org",
    )
    assert other.status == 0, other.err

    async def shown_ids(*filters: str) -> set[str]:
        result = await server.cli("entry", "show", *filters, "-output", "json")
        assert result.status == 0, result.err
        return {entry["spiffe_id"]["path"] for entry in result.json()["entries"]}

    assert await shown_ids() == {"/workload", "/other"}
    assert await shown_ids("-spiffeID", WORKLOAD) == {"/workload"}
    assert await shown_ids("-parentID", PARENT) == {"/workload", "/other"}
    assert await shown_ids("-selector", "unix:uid:2000") == {"/other"}
    # superset (the default): entries having at least these selectors
    assert await shown_ids("-selector", "unix:gid:7") == {"/other"}
    assert await shown_ids("-selector", "unix:uid:2000", "-matchSelectorsOn", "exact") == set()
    assert await shown_ids(
        "-selector", "unix:uid:2000", "-selector", "unix:uid:1000", "-matchSelectorsOn", "any"
    ) == {"/workload", "/other"}
    assert await shown_ids("-federatesWith", "partner.org") == {"/other"}
    assert await shown_ids("-hint", "one") == {"/workload"}

    count = await server.cli("entry", "count")
    assert (count.status, count.out) == (0, "2 registration entries\n")
    count = await server.cli("entry", "count", "-selector", "unix:uid:1000")
    assert (count.status, count.out) == (0, "1 registration entry\n")
    assert (await server.cli("entry", "count", "-output", "json")).json() == {"count": 2}
    none = await server.cli("entry", "show", "-spiffeID", "spiffe://example.org/nobody")
    assert (none.status, none.out) == (0, "Found 0 entries\n")
    assert first["hint"] == "one"


async def test_update_replaces_the_entry_and_delete_removes_it(server: AdminServer) -> None:
    entry = await create(server)
    entry_id = str(entry["id"])
    updated = await server.cli(
        "entry",
        "update",
        "-entryID",
        entry_id,
        "-spiffeID",
        "spiffe://example.org/renamed",
        "-parentID",
        PARENT,
        "-selector",
        "unix:uid:3000",
        "-output",
        "json",
    )
    assert updated.status == 0, updated.err
    [result] = updated.json()["results"]
    assert result["entry"]["spiffe_id"]["path"] == "/renamed"
    assert int(result["entry"]["revision_number"]) == int(str(entry["revision_number"])) + 1

    deleted = await server.cli("entry", "delete", "-entryID", entry_id)
    assert (deleted.status, deleted.out) == (0, f"Deleted entry with ID: {entry_id}\n")
    gone = await server.cli("entry", "show", "-entryID", entry_id)
    assert gone.status == 1
    assert gone.err == "pyspire-server: error: entry not found\n"
    assert gone.out == ""


async def test_unknown_entry_errors_name_the_problem(server: AdminServer) -> None:
    deleted = await server.cli("entry", "delete", "-entryID", "no-such-entry")
    assert deleted.status == 1
    assert deleted.err == "pyspire-server: error: entry not found\n"
    updated = await server.cli(
        "entry",
        "update",
        "-entryID",
        "no-such-entry",
        "-spiffeID",
        WORKLOAD,
        "-parentID",
        PARENT,
        "-selector",
        "unix:uid:1",
    )
    assert updated.status == 1
    assert updated.err == (
        "pyspire-server: error: failed to update entry 1 (no-such-entry): "
        "not found: entry not found\n"
    )


async def test_duplicate_entry_fails_with_already_exists(server: AdminServer) -> None:
    await create(server)
    again = await server.cli(
        "entry", "create", "-spiffeID", WORKLOAD, "-parentID", PARENT, "-selector", "unix:uid:1000"
    )
    assert again.status == 1
    assert again.out == ""
    assert again.err == (
        f"pyspire-server: error: failed to create entry 1 ({WORKLOAD}): "
        "already exists: similar entry already exists\n"
    )


async def test_invalid_flags_name_the_flag(server: AdminServer) -> None:
    cases = {
        ("-spiffeID", "http://example.org/x"): "invalid -spiffeID: invalid SPIFFE ID",
        ("-selector", "unix"): "invalid -selector: invalid selector 'unix': expected 'type:value'",
        ("-parentID", "spiffe://Bad Domain/x"): "invalid -parentID: invalid SPIFFE ID",
        ("-federatesWith", "no good"): "invalid -federatesWith:",
        ("-x509SVIDTTL", "-5"): "invalid -x509SVIDTTL: invalid duration '-5': must not be",
        ("-jwtSVIDTTL", "1.5s"): "invalid -jwtSVIDTTL: '1.5s' is not a whole number of seconds",
        ("-x509SVIDTTL", "1y"): "invalid -x509SVIDTTL: invalid duration '1y': expected numbers",
        ("-x509SVIDTTL", "25000d"): (
            "invalid -x509SVIDTTL: '25000d' is out of range (0s to 2147483647s)"
        ),
    }
    base = {"-spiffeID": WORKLOAD, "-parentID": PARENT, "-selector": "unix:uid:1"}
    for (flag, value), expected in cases.items():
        argv = dict(base, **{flag: value})
        result = await server.cli("entry", "create", *[part for kv in argv.items() for part in kv])
        assert result.status == 1, (flag, result.out)
        assert result.err.startswith(f"pyspire-server: error: {expected}"), result.err
        assert result.err.count("\n") == 1
    missing = await server.cli("entry", "create", "-spiffeID", WORKLOAD, "-selector", "a:b")
    assert missing.err == (
        "pyspire-server: error: missing -parentID: a parent ID is required unless -node is set\n"
    )
    no_selector = await server.cli("entry", "create", "-spiffeID", WORKLOAD, "-parentID", PARENT)
    assert "missing -selector" in no_selector.err
    foreign = await server.cli(
        "entry",
        "create",
        "-spiffeID",
        "spiffe://other.org/x",
        "-parentID",
        PARENT,
        "-selector",
        "a:b",
    )
    assert foreign.status == 1
    assert "spiffe_id" in foreign.err and "other.org" in foreign.err
    bad_filter = await server.cli("entry", "show", "-selector", "nocolon")
    assert bad_filter.status == 1
    assert "invalid -selector" in bad_filter.err


async def test_data_file_creates_each_entry_and_reports_partial_failure(
    server: AdminServer, tmp_path: Path
) -> None:
    await create(server)
    document = {
        "entries": [
            {
                "spiffe_id": {"trust_domain": "example.org", "path": "/from-file"},
                "parent_id": {"trust_domain": "example.org", "path": "/spire/server"},
                "selectors": [{"type": "unix", "value": "uid:42"}],
                "x509_svid_ttl": 300,
                "dns_names": ["a.example.org"],
                "expires_at": "4102444800",
            },
            {
                "spiffeId": {"trustDomain": "example.org", "path": "/workload"},
                "parentId": {"trustDomain": "example.org", "path": "/spire/agent/join_token/abc"},
                "selectors": [{"type": "unix", "value": "uid:1000"}],
            },
        ]
    }
    data = tmp_path / "entries.json"
    data.write_text(json.dumps(document))
    result = await server.cli("entry", "create", "-data", str(data))
    assert result.status == 1
    assert "SPIFFE ID        : spiffe://example.org/from-file" in result.out
    assert "Expiration time  : 2100-01-01T00:00:00Z" in result.out
    assert result.err == (
        "pyspire-server: error: failed to create entry 2 (spiffe://example.org/workload): "
        "already exists: similar entry already exists\n"
        "pyspire-server: 1 of 2 entries failed to create\n"
    )
    count = await server.cli("entry", "count")
    assert count.out == "2 registration entries\n"


async def test_data_from_stdin(server: AdminServer) -> None:
    document = {
        "entries": [
            {
                "spiffe_id": "spiffe://example.org/stdin",
                "parent_id": PARENT,
                "selectors": ["unix:uid:7"],
            }
        ]
    }
    result = await server.cli("entry", "create", "-data", "-", stdin=json.dumps(document))
    assert result.status == 0, result.err
    assert "SPIFFE ID        : spiffe://example.org/stdin" in result.out


async def test_bad_data_is_refused_with_the_place_named(
    server: AdminServer, tmp_path: Path
) -> None:
    cases = {
        "{not json": "invalid -data: not JSON: expecting property name enclosed in double quotes",
        "[]": 'invalid -data: expected an object {"entries": [...]}, found an array',
        "{}": "invalid -data: 'entries' is missing",
        '{"entries": []}': "invalid -data: 'entries' is empty",
        '{"entries": [{"spiffe_id": 5}]}': (
            "invalid -data: entries[0].spiffe_id: expected an object"
        ),
        '{"entries": [{"selectors": [{"type": "unix"}]}]}': (
            "invalid -data: entries[0].selectors[0]: type and value must be strings"
        ),
        '{"entries": [{"colour": "blue"}]}': "invalid -data: entries[0].colour: unknown field",
        '{"entries": [{"x509_svid_ttl": -1}]}': (
            "invalid -data: entries[0].x509_svid_ttl: -1 is out of range"
        ),
        '{"entries": [{"spiffe_id": "spiffe://example.org/ok", "admin": "yes"}]}': (
            "invalid -data: entries[0].admin: expected a boolean, found a string"
        ),
    }
    for text, expected in cases.items():
        data = tmp_path / "bad.json"
        data.write_text(text)
        result = await server.cli("entry", "create", "-data", str(data))
        assert result.status == 1, text
        assert result.err.startswith(f"pyspire-server: error: {expected}"), result.err
    missing = await server.cli("entry", "create", "-data", str(tmp_path / "absent.json"))
    assert missing.err.startswith("pyspire-server: error: invalid -data: file ")
    mixed = await server.cli("entry", "create", "-data", str(data), "-spiffeID", WORKLOAD)
    assert mixed.err == (
        "pyspire-server: error: -data cannot be combined with flags describing an entry\n"
    )
    no_id = tmp_path / "noid.json"
    no_id.write_text(json.dumps({"entries": [{"spiffe_id": WORKLOAD}]}))
    update = await server.cli("entry", "update", "-data", str(no_id))
    assert update.err == (
        "pyspire-server: error: invalid -data: entries[0].id is required to update\n"
    )


async def test_ttl_flags_take_durations_or_seconds(server: AdminServer) -> None:
    entry = await create(server, "-x509SVIDTTL", "1h", "-jwtSVIDTTL", "5m")
    assert (entry["x509_svid_ttl"], entry["jwt_svid_ttl"]) == (3600, 300)
    updated = await server.cli(
        "entry",
        "update",
        "-entryID",
        str(entry["id"]),
        "-spiffeID",
        WORKLOAD,
        "-parentID",
        PARENT,
        "-selector",
        "unix:uid:1000",
        "-x509SVIDTTL",
        "1h30m",
        "-jwtSVIDTTL",
        "90",
        "-output",
        "json",
    )
    assert updated.status == 0, updated.err
    [item] = updated.json()["results"]
    assert (item["entry"]["x509_svid_ttl"], item["entry"]["jwt_svid_ttl"]) == (5400, 90)


async def test_show_prints_control_characters_as_escapes(
    server: AdminServer, tmp_path: Path
) -> None:
    entry = await create(server, "-hint", "web", "-selector", "docker:label:xy")
    # The server refuses control characters now; a datastore written before (or by another
    # tool) may still hold them, and the CLI must not hand them to the terminal.
    hint = "web\x1b[2J\nAdmin            : true"
    with sqlite3.connect(tmp_path / "data" / "datastore.sqlite3") as database:
        database.execute("UPDATE entries SET hint = ? WHERE entry_id = ?", (hint, entry["id"]))
        database.execute(
            "UPDATE entry_selectors SET value = ? WHERE value = ?", ("label:x\x07y", "label:xy")
        )
    for argv in (("entry", "show"), ("entry", "show", "-entryID", str(entry["id"]))):
        shown = await server.cli(*argv)
        assert shown.status == 0, shown.err
        assert "\x1b" not in shown.out and "\x07" not in shown.out
        assert "Admin            : true" not in shown.out.splitlines()
        assert "Hint             : web\\x1b[2J\\nAdmin            : true" in shown.out
        assert "Selector         : docker:label:x\\x07y" in shown.out
    # JSON output carries the values themselves, escaped by the JSON encoder.
    [listed] = (await server.cli("entry", "show", "-output", "json")).json()["entries"]
    assert listed["hint"] == hint


class Terminal(io.StringIO):
    """Standard error as a person at a terminal has it."""

    def isatty(self) -> bool:
        return True


def big_entries(count: int) -> list[dict[str, object]]:
    """Entries of about 7 KiB each (a long hint, thirty long DNS names): ``count`` of 600
    encode to more than the 4 MiB a single request may carry."""
    label = "a" * 60
    return [
        {
            "spiffe_id": f"spiffe://example.org/big/{number}",
            "parent_id": PARENT,
            "selectors": [f"unix:uid:{number}"],
            "hint": "h" * 1000,
            "dns_names": [f"{label}.{label}.{label}.n{number}-{j}.example.org" for j in range(30)],
        }
        for number in range(count)
    ]


async def test_a_document_larger_than_a_request_is_sent_in_batches(
    server: AdminServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bar shows only after half a second of work; a quick machine finishes sooner.
    monkeypatch.setattr(progress_module, "_DEFAULT_DELAY", 0.0)
    entries = big_entries(600)
    entries.append(dict(entries[0]))  # a duplicate, in the last batch: entry 601 fails
    data = tmp_path / "big.json"
    data.write_text(json.dumps({"entries": entries}))
    assert data.stat().st_size > 4 * 1024 * 1024

    out, err = io.StringIO(), Terminal()
    context = CliContext(side=Side.SERVER, prog="pyspire-server", stdout=out, stderr=err)
    argv = ["entry", "create", "-data", str(data), "-socketPath", str(server.socket_path)]
    status = await asyncio.to_thread(run_cli, [*argv, "-output", "json"], context)
    assert status == 1
    results = json.loads(out.getvalue())["results"]
    assert len(results) == 601
    assert [result["status"]["code"] for result in results] == [0] * 600 + [6]
    assert results[599]["entry"]["spiffe_id"]["path"] == "/big/599"
    # A terminal saw the progress bar, always cleared before a line was written.
    bars = re.findall(r"\r[^\r\n]*\x1b\[K", err.getvalue())
    assert any("creating [" in bar and "/601 entries" in bar for bar in bars), bars
    assert re.sub(r"\r[^\r\n]*\x1b\[K", "", err.getvalue()) == (
        "pyspire-server: error: failed to create entry 601 (spiffe://example.org/big/0): "
        "already exists: similar entry already exists\n"
        "pyspire-server: 1 of 601 entries failed to create\n"
    )

    # Every entry comes back, in pages; update them all the same way.
    shown = await server.cli("entry", "show", "-output", "json")
    assert shown.status == 0, shown.err
    assert shown.err == "", "no progress bar on a pipe"
    listed = shown.json()["entries"]
    assert sorted(entry["spiffe_id"]["path"] for entry in listed) == sorted(
        f"/big/{number}" for number in range(600)
    )
    for entry in listed:
        entry["hint"] = "g" * 1000
    data.write_text(json.dumps({"entries": listed}))
    updated = await server.cli("entry", "update", "-data", str(data))
    assert updated.status == 0, updated.err
    assert updated.out.count("Hint             : " + "g" * 1000) == 600
    text = await server.cli("entry", "show", "-hint", "g" * 1000)
    assert text.out.startswith("Found 600 entries\n\nEntry ID         : ")
    assert text.out.count("Entry ID         : ") == 600
