"""Forced rotation with real processes: how long after ``localauthority x509 taint`` an agent
holding 1,000 X509-SVIDs has replaced them all, against a floor measured in the same run.

    .venv/bin/python tests/bench/bench_taint_reissue.py [--entries 1000] [--sync-interval 5s]

A real ``pyspire-server`` (SQLite, disk keys) and ``pyspire-agent`` (join token, SPIRE's default
sync interval of 5 s) start; ``--entries`` entries are registered under the agent, each with a
selector of its own, and the agent mints their SVIDs. The **floor** is that first issuance:
from the entries' creation to the last of them minted, i.e. one sync interval plus the server
signing every SVID at once. Then the operator prepares and activates a new X.509 authority
(which replaces nothing: the old one stays trusted) and taints the old one; the **measure** is
from the taint to the last SVID re-minted. The agent spreads the re-minting over ten seconds
(SPIRE's agent does 100 every 5 s, some 50 s for 1,000), so the measure is expected above the
floor; the target is ≤ 30 s. Counts come from the agent's debug log ("x509 svids renewed").
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    short_temp_dir,
)

from pyspire.proto.gen.spire.api import types as pb
from pyspire.proto.gen.spire.api.server.entry import v1 as entry_pb
from pyspire_sdk.spiffeid import SpiffeId

TARGET_SECONDS = 30.0
TIMEOUT_SECONDS = 180.0
RENEWED = re.compile(r"x509 svids renewed\s.*?issued=(\d+)")


def _wire_id(text: str) -> pb.Spiffeid:
    parsed = SpiffeId.parse(text)
    return pb.Spiffeid(trust_domain=parsed.trust_domain.name, path=parsed.path)


def register(deployment: Deployment, count: int) -> None:
    parent = _wire_id(deployment.agent_id)
    for start in range(0, count, 500):
        entries = [
            pb.Entry(
                spiffe_id=_wire_id(f"spiffe://{TRUST_DOMAIN}/bench/{number}"),
                parent_id=parent,
                selectors=[pb.Selector(type="unix", value=f"uid:{100000 + number}")],
            )
            for number in range(start, min(count, start + 500))
        ]
        request = entry_pb.BatchCreateEntryRequest(entries=entries)
        answer = deployment.server.api(lambda client, r=request: client.entry.batch_create_entry(r))
        refused = [r.status.message for r in answer.results if r.status.code != 0]
        if refused:
            raise SystemExit(f"entries refused: {refused[:3]}")


def issued_since(deployment: Deployment, offset: int) -> int:
    return sum(int(m.group(1)) for m in RENEWED.finditer(deployment.agent.log()[offset:]))


def wait_issued(deployment: Deployment, offset: int, count: int) -> float:
    """Seconds until the agent's log, from ``offset`` on, counts ``count`` SVIDs issued."""
    started = time.monotonic()
    while issued_since(deployment, offset) < count:
        if time.monotonic() - started > TIMEOUT_SECONDS:
            raise SystemExit(
                f"only {issued_since(deployment, offset)} of {count} SVIDs issued "
                f"after {TIMEOUT_SECONDS:g}s"
            )
        time.sleep(0.05)
    return time.monotonic() - started


def show(deployment: Deployment, field: str) -> str:
    import json

    out = deployment.server.cli("localauthority", "x509", "show", "-output", "json").stdout
    return str(json.loads(out)[field]["authority_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--sync-interval", default="5s")
    args = parser.parse_args()
    root = short_temp_dir()
    port = free_port()
    deployment = Deployment.start(
        ServerSettings(root=root, port=port, ca_ttl="24h", default_x509_svid_ttl="1h"),
        AgentSettings(
            root=root,
            server_port=port,
            bootstrap_bundle=root / "bootstrap.pem",
            sync_interval=args.sync_interval,
            log_level="DEBUG",
        ),
    )
    try:
        offset = len(deployment.agent.log())
        register(deployment, args.entries)
        floor = wait_issued(deployment, offset, args.entries)

        deployment.server.cli("localauthority", "x509", "prepare")
        new = show(deployment, "prepared")
        old = show(deployment, "active")
        deployment.server.cli("localauthority", "x509", "activate", "-authorityID", new)
        time.sleep(1)  # nothing is re-minted for an activation; let a sync pass
        offset = len(deployment.agent.log())
        deployment.server.cli("localauthority", "x509", "taint", "-authorityID", old)
        measure = wait_issued(deployment, offset, args.entries)
    finally:
        deployment.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.entries} SVIDs, agent sync interval {args.sync_interval}")
    print(f"floor: first issuance, creation to last minted   {floor:7.2f} s")
    print(
        f"taint to last re-minted                          {measure:7.2f} s  "
        f"{measure / floor:5.2f}x floor  (target <= {TARGET_SECONDS:g} s: "
        f"{'met' if measure <= TARGET_SECONDS else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
