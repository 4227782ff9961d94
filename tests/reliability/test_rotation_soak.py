"""Rotation soak: a workload fetches its X509-SVID once a second while the server rotates its
CA and the agent rotates every SVID, and every fetch must succeed with an SVID that is valid and
chains to the bundle delivered with it.

Full form: ``ca_ttl`` 60 s, SVID TTL 10 s, ten minutes (the CA rotates about every 30 s, so at
least nine rotations must reach the workload). Quick form: the same CA lifetime (the server
checks rotation every 10 s, so a shorter CA would outlive its successor's activation window)
with 10 s SVIDs for 20 s: SVID rotations but no CA rotation yet.

Figures: fetch latency p50/p99 (aim: p99 < 50 ms), RSS of server and agent after warm-up and
at the end (aim: growth < 10 %), descriptor counts, SVID and CA rotations seen by the workload.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from figures import Figures, growth_percent, mib, percentile
from forms import by_form
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    short_temp_dir,
)
from spiffe import WorkloadApiClient
from workload import Outcome, fetch

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/soak"


@dataclass(frozen=True)
class Soak:
    duration: float
    ca_ttl: str
    svid_ttl: str
    min_ca_rotations: int
    warm_up: float


SOAK = by_form(
    quick=Soak(duration=20, ca_ttl="60s", svid_ttl="10s", min_ca_rotations=0, warm_up=3),
    full=Soak(duration=600, ca_ttl="60s", svid_ttl="10s", min_ca_rotations=9, warm_up=30),
)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    root = short_temp_dir()
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(
            root=root,
            port=port,
            ca_ttl=SOAK.ca_ttl,
            default_x509_svid_ttl=SOAK.svid_ttl,
            default_jwt_svid_ttl=SOAK.svid_ttl,
        ),
        AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
        [(WORKLOAD, [f"unix:uid:{os.getuid()}"])],
    )
    try:
        yield deployed
    finally:
        deployed.stop()


def test_rotation_soak(deployment: Deployment, figures: Figures) -> None:
    server, agent = deployment.server, deployment.agent
    outcomes: list[Outcome] = []
    baseline: dict[str, int] = {}
    started = time.monotonic()
    with WorkloadApiClient(socket_path=agent.endpoint) as client:
        tick = started
        while tick - started < SOAK.duration:
            outcomes.append(fetch(client, TRUST_DOMAIN))
            if not baseline and tick - started >= SOAK.warm_up:
                baseline = {
                    "server_rss": server.rss_bytes(),
                    "agent_rss": agent.rss_bytes(),
                    "server_fds": server.fd_count(),
                    "agent_fds": agent.fd_count(),
                }
            tick += 1.0
            time.sleep(max(0.0, tick - time.monotonic()))
    end = {
        "server_rss": server.rss_bytes(),
        "agent_rss": agent.rss_bytes(),
        "server_fds": server.fd_count(),
        "agent_fds": agent.fd_count(),
    }

    ok = [outcome for outcome in outcomes if outcome.ok]
    latencies_ms = [outcome.latency * 1000 for outcome in ok]
    failed = [outcome.error for outcome in outcomes if not outcome.ok]
    unchained = sum(1 for outcome in ok if not outcome.chains)
    expired = sum(1 for outcome in ok if not outcome.valid)
    serials = {outcome.serial for outcome in ok}
    authorities = {outcome.issuer_key for outcome in ok if outcome.chains}
    activations = server.log().count("x509 CA activated")
    figures.add(
        seconds=round(time.monotonic() - started),
        fetches=len(outcomes),
        failed=len(failed),
        expired=expired,
        unchained=unchained,
        p50_ms=percentile(latencies_ms, 0.50),
        p99_ms=percentile(latencies_ms, 0.99),
        max_ms=max(latencies_ms, default=0.0),
        aim_p99_ms=50,
        svids_seen=len(serials),
        ca_rotations_seen=max(0, len(authorities) - 1),
        ca_activations_logged=max(0, activations - 1),
        server_rss_mib=mib(end["server_rss"]),
        server_rss_growth_pct=growth_percent(baseline["server_rss"], end["server_rss"]),
        agent_rss_mib=mib(end["agent_rss"]),
        agent_rss_growth_pct=growth_percent(baseline["agent_rss"], end["agent_rss"]),
        aim_rss_growth_pct=10,
        server_fds=f"{baseline['server_fds']}->{end['server_fds']}",
        agent_fds=f"{baseline['agent_fds']}->{end['agent_fds']}",
    )
    figures.report()

    assert not failed, f"{len(failed)} of {len(outcomes)} fetches failed: {sorted(set(failed))}"
    assert {outcome.spiffe_id for outcome in ok} == {WORKLOAD}
    assert expired == 0, f"{expired} fetches returned an SVID outside its validity"
    assert unchained == 0, f"{unchained} SVIDs did not chain to the bundle they came with"
    assert len(serials) >= len(outcomes) // 4, "SVIDs were not rotated"
    assert len(authorities) - 1 >= SOAK.min_ca_rotations, (
        f"the workload saw {len(authorities) - 1} CA rotations, expected at least "
        f"{SOAK.min_ca_rotations}"
    )
