"""Benchmark of ``entry create -data`` and ``entry show`` with many entries, against raw SQLite.

Run from the repository root: ``.venv/bin/python tests/bench/bench_entry_cli.py`` (100,000
entries by default; ``--entries`` to change it). It takes minutes.

A real ``pyspire-server`` process (SQLite datastore, disk key manager) is started; one JSON
document of ``--entries`` typical workload entries (a SPIFFE ID, a parent, two selectors) is
written, and the CLI is timed as an operator runs it, output redirected to a file:

- ``entry create -data FILE`` (batched into calls that fit the 4 MiB message limit);
- ``entry show`` (text) and ``entry show -output json`` (paged and streamed).

For each, the wall time, the CPU time of the CLI process and of the server process, and the
CLI's peak memory are printed. The floor is the same rows written to and read from the
datastore's own tables with Python's ``sqlite3`` and nothing else (one transaction of
``executemany`` for the entries, their selectors and their change events; one joined
``SELECT`` for reading), measured in the same run; the ratios are CLI time / floor time.
For scale, the cost of encoding and decoding the same entries in this process (the generated
codec the CLI uses, and betterproto) is printed too: every entry crosses the wire as a
protobuf message, twice for ``create`` (request and answer) and once for ``show``. Nothing is
asserted: benchmarks print, tests assert.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pyspire_datastore_sqlite.schema import MIGRATIONS

from pyspire.cli.entry_json import entries_from_document
from pyspire.proto.gen.codec import spire_api_server_entry_v1 as wire
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from processes import (
    SERVER,
    TRUST_DOMAIN,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
)

PARENT = f"spiffe://{TRUST_DOMAIN}/spire/agent/k8s_psat/cluster/node-1"
CLI_TIMEOUT = 3600.0


def entry_document(number: int) -> dict[str, object]:
    return {
        "spiffe_id": f"spiffe://{TRUST_DOMAIN}/ns/team-{number % 40}/sa/app-{number}",
        "parent_id": PARENT,
        "selectors": [f"k8s:ns:team-{number % 40}", f"k8s:sa:app-{number}"],
    }


def write_document(path: Path, count: int) -> None:
    """The -data document, written entry by entry. This process never holds it whole: a CLI
    process started from it inherits its memory until exec, and the peak measured for the CLI
    (``ru_maxrss`` survives exec) would be this process's instead."""
    with path.open("w") as out:
        out.write('{"entries": [')
        for number in range(count):
            out.write((", " if number else "") + json.dumps(entry_document(number)))
        out.write("]}")


@dataclass(frozen=True)
class Run:
    """One CLI command: wall seconds, CPU seconds of the CLI and of the server, peak memory."""

    wall: float
    cli_cpu: float
    server_cpu: float
    cli_peak_mib: float
    output_bytes: int


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_cli(server: ServerProcess, output: Path, *argv: str) -> Run:
    """Run ``pyspire-server <argv>`` with standard output to ``output``; measure it."""
    assert server.process is not None
    server_pid = server.process.pid
    server_before = process_cpu(server_pid)
    command = [str(SERVER), *argv, "-socketPath", str(server.socket_path)]
    started = time.perf_counter()
    with output.open("wb") as sink:
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    assert child.stderr is not None
    problems = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise ProcessError(f"{' '.join(argv)} exited {code}: {problems[-2000:]}")
    return Run(
        wall=wall,
        cli_cpu=usage.ru_utime + usage.ru_stime,
        server_cpu=process_cpu(server_pid) - server_before,
        cli_peak_mib=usage.ru_maxrss / 1024,
        output_bytes=output.stat().st_size,
    )


def sqlite_floor(path: Path, count: int) -> tuple[float, float]:
    """Seconds to insert the same rows into the datastore's own tables with plain sqlite3, and
    to read them back with their selectors."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for statements in MIGRATIONS:
            for statement in statements:
                connection.execute(statement)
        created = int(time.time() * 1_000_000)
        entries = []
        selectors = []
        events = []
        for number in range(count):
            values = [("k8s", f"ns:team-{number % 40}"), ("k8s", f"sa:app-{number}")]
            digest = hashlib.sha256(repr(sorted(values)).encode()).digest()
            entry_id = str(uuid.uuid4())
            spiffe_id = f"spiffe://{TRUST_DOMAIN}/ns/team-{number % 40}/sa/app-{number}"
            row = (number + 1, entry_id, spiffe_id, PARENT, digest, 0, 0, 0, 0, None, 0, 0, "")
            entries.append((*row, created))
            selectors.extend(
                (number + 1, position, kind, value) for position, (kind, value) in enumerate(values)
            )
            events.append(("entry", entry_id, created))
        started = time.perf_counter()
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO entries (pk, entry_id, spiffe_id, parent_id, selectors_hash, "
            "x509_svid_ttl, jwt_svid_ttl, admin, downstream, expires_at, revision_number, "
            "store_svid, hint, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            entries,
        )
        connection.executemany(
            "INSERT INTO entry_selectors (entry_pk, position, type, value) VALUES (?, ?, ?, ?)",
            selectors,
        )
        connection.executemany(
            "INSERT INTO change_events (kind, object_id, created_at) VALUES (?, ?, ?)", events
        )
        connection.execute("COMMIT")
        insert_seconds = time.perf_counter() - started
        started = time.perf_counter()
        rows = 0
        for _ in connection.execute(
            "SELECT e.entry_id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, "
            "e.revision_number, e.hint, e.created_at, s.type, s.value FROM entries AS e "
            "LEFT JOIN entry_selectors AS s ON s.entry_pk = e.pk ORDER BY e.pk, s.position"
        ):
            rows += 1
        select_seconds = time.perf_counter() - started
        assert rows == 2 * count
    finally:
        connection.close()
    return insert_seconds, select_seconds


def codec_costs(text: str) -> dict[str, float]:
    """Seconds, in this process, to read the -data document, to encode every entry with the
    generated codec (as the CLI does) and to decode them again, and the same encode and
    decode with betterproto for comparison."""
    costs: dict[str, float] = {}
    started = time.perf_counter()
    drafts = entries_from_document(json.loads(text))
    costs["-data document read and checked"] = time.perf_counter() - started
    started = time.perf_counter()
    encoded = wire.write_BatchCreateEntryRequest(entries=[draft.encoded() for draft in drafts])
    costs["generated encode, all entries"] = time.perf_counter() - started
    started = time.perf_counter()
    wire.decode_BatchCreateEntryRequest(encoded)
    costs["generated decode, all entries"] = time.perf_counter() - started
    request = entry_pb.BatchCreateEntryRequest().parse(encoded)
    started = time.perf_counter()
    bytes(request)
    costs["betterproto encode, all entries"] = time.perf_counter() - started
    started = time.perf_counter()
    entry_pb.BatchCreateEntryRequest().parse(encoded)
    costs["betterproto decode, all entries"] = time.perf_counter() - started
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=100_000, help="entries to create")
    parser.add_argument(
        "--server-log-level", default="INFO", help="the server's log_level (default: INFO)"
    )
    args = parser.parse_args(argv)
    count = args.entries

    root = short_temp_dir()
    server = ServerProcess(
        ServerSettings(root=root, port=free_port(), log_level=args.server_log_level)
    )
    data = root / "entries.json"
    write_document(data, count)
    document_mb = data.stat().st_size / 1e6
    try:
        server.start()
        create = run_cli(server, root / "create.out", "entry", "create", "-data", str(data))
        show = run_cli(server, root / "show.out", "entry", "show")
        show_json = run_cli(server, root / "show.json", "entry", "show", "-output", "json")
        server.terminate()
        listed = len(json.loads((root / "show.json").read_text())["entries"])
        insert_floor, select_floor = sqlite_floor(root / "floor.sqlite3", count)
        costs = codec_costs(data.read_text())
    except ProcessError as error:
        print(f"benchmark failed: {error}\nserver log:\n{server.log()[-4000:]}", file=sys.stderr)
        return 1
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)
    if listed != count:
        print(f"error: entry show -output json listed {listed} of {count} entries")
        return 1

    print(f"{count:,} entries, a {document_mb:.1f} MB -data document")
    header = f"{'':44} {'wall':>8} {'cli cpu':>8} {'server':>8} {'cli peak':>9} {'output':>9}"
    print(header)
    for label, run in (
        ("entry create -data", create),
        ("entry show (text)", show),
        ("entry show -output json", show_json),
    ):
        print(
            f"{label:44} {run.wall:7.1f}s {run.cli_cpu:7.1f}s {run.server_cpu:7.1f}s "
            f"{run.cli_peak_mib:7.0f}MiB {run.output_bytes / 1e6:7.1f}MB"
        )
    print(f"{'floor: sqlite3 insert of the same rows':44} {insert_floor:7.2f}s")
    print(f"{'floor: sqlite3 select of the same rows':44} {select_floor:7.2f}s")
    for what, seconds in costs.items():
        print(f"{'reference: ' + what:44} {seconds:7.2f}s")
    print(f"ratio create / insert floor:     {create.wall / insert_floor:8.1f}x")
    print(f"ratio show / select floor:       {show.wall / select_floor:8.1f}x")
    print(f"ratio show json / select floor:  {show_json.wall / select_floor:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
