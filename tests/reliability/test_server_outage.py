"""The server goes away while workloads keep asking the agent for their SVIDs.

Outage: workloads keep fetching while the server is stopped for longer than the SVID TTL. The
agent must never hand out an expired SVID, must not fail a fetch while it still holds a valid
SVID, and must resync within ``sync_interval`` + 2 s of the server's return (the first fetch of
a valid SVID after the server's healthcheck passes again). Quick form: 4 s workload SVIDs and a
6 s outage; full form: 10 s workload SVIDs and a 60 s outage. In both the agent's own SVID
outlives the outage.

Restart: the agent is restarted while the server is down; it must serve the SVIDs it persisted
at once (the first fetch after its socket appears succeeds, with a valid SVID).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from figures import Figures
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
from workload import Outcome, fetch, fetching

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

WORKLOAD = f"spiffe://{TRUST_DOMAIN}/outage"
SYNC_INTERVAL = 1.0
RESYNC_ALLOWANCE = SYNC_INTERVAL + 2.0


@dataclass(frozen=True)
class Outage:
    svid_ttl: int
    agent_ttl: str
    """The agent's own SVID lifetime, longer than the outage: a join-token agent whose own SVID
    expires while the server is away cannot renew it and is not allowed to attest again."""
    outage: float
    fetch_period: float
    resync_wait: float
    """How long to keep fetching after the server's return (the figure shows a late resync)."""


OUTAGE = by_form(
    quick=Outage(
        svid_ttl=4, agent_ttl="1h", outage=6, fetch_period=0.25, resync_wait=RESYNC_ALLOWANCE + 3
    ),
    full=Outage(svid_ttl=10, agent_ttl="1h", outage=60, fetch_period=0.2, resync_wait=120),
)


def _deploy(svid_ttl: str, agent_ttl: str | None = None) -> Deployment:
    root = short_temp_dir()
    port = free_port()
    return Deployment.start(
        ServerSettings(
            root=root,
            port=port,
            ca_ttl="1h",
            default_x509_svid_ttl=svid_ttl,
            default_jwt_svid_ttl=svid_ttl,
            agent_ttl=agent_ttl,
        ),
        AgentSettings(
            root=root,
            server_port=port,
            bootstrap_bundle=root / "bootstrap.pem",
            sync_interval=f"{SYNC_INTERVAL:g}s",
        ),
        [(WORKLOAD, [f"unix:uid:{os.getuid()}"])],
    )


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    deployed = _deploy(f"{OUTAGE.svid_ttl}s", OUTAGE.agent_ttl)
    try:
        yield deployed
    finally:
        deployed.stop()


def _failures_while_valid(outcomes: list[Outcome]) -> list[Outcome]:
    """Failed fetches at a moment when the last SVID served was still valid."""
    held: Outcome | None = None
    found = []
    for outcome in outcomes:
        if outcome.ok:
            held = outcome
        elif held is not None and outcome.ended < held.not_after:
            found.append(outcome)
    return found


def test_server_outage_longer_than_the_svid_ttl(deployment: Deployment, figures: Figures) -> None:
    server, agent = deployment.server, deployment.agent
    with fetching(agent.endpoint, TRUST_DOMAIN, OUTAGE.fetch_period) as fetcher:
        time.sleep(2.0)
        assert server.terminate() == 0, server.log()
        down = datetime.now(UTC)
        time.sleep(OUTAGE.outage)
        restarting = datetime.now(UTC)
        server.start()
        back = datetime.now(UTC)
        deadline = time.monotonic() + OUTAGE.resync_wait
        while fetcher.first_valid_after(back) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    outcomes = fetcher.outcomes
    during = [o for o in outcomes if down <= o.ended < restarting]
    expired = [o for o in outcomes if o.ok and not o.valid]
    while_valid = _failures_while_valid(outcomes)
    unchained = [o for o in outcomes if o.ok and not o.chains]
    last_before = max(
        (o.not_after for o in outcomes if o.ok and o.ended < restarting), default=down
    )
    resynced = fetcher.first_valid_after(back)
    resync_seconds = (resynced.ended - back).total_seconds() if resynced else float("inf")
    figures.add(
        outage_s=(back - down).total_seconds(),
        server_start_s=(back - restarting).total_seconds(),
        svid_ttl_s=OUTAGE.svid_ttl,
        fetches=len(outcomes),
        during_ok=sum(1 for o in during if o.ok),
        during_failed=sum(1 for o in during if not o.ok),
        served_valid_until_s=(last_before - down).total_seconds(),
        expired_served=len(expired),
        failed_while_valid=len(while_valid),
        unchained=len(unchained),
        resync_s=resync_seconds,
        allowed_resync_s=RESYNC_ALLOWANCE,
        statuses=",".join(sorted({o.error for o in outcomes if not o.ok})),
    )
    figures.report()

    assert not expired, f"{len(expired)} fetches returned an expired SVID"
    assert not while_valid, (
        f"{len(while_valid)} fetches failed while the agent held a valid SVID: "
        f"{sorted({o.error for o in while_valid})}"
    )
    assert not unchained, f"{len(unchained)} SVIDs did not chain to their bundle"
    assert resynced is not None, f"no valid SVID within {OUTAGE.resync_wait:g}s of the return"
    assert resync_seconds <= RESYNC_ALLOWANCE, (
        f"the agent resynced {resync_seconds:.1f}s after the server returned, allowed "
        f"{RESYNC_ALLOWANCE:g}s"
    )
    assert agent.running


@pytest.fixture
def long_lived() -> Iterator[Deployment]:
    deployed = _deploy("1h")
    try:
        yield deployed
    finally:
        deployed.stop()


def test_agent_restarted_while_the_server_is_down_serves_persisted_svids(
    long_lived: Deployment, figures: Figures
) -> None:
    server, agent = long_lived.server, long_lived.agent
    with WorkloadApiClient(socket_path=agent.endpoint) as client:
        before = fetch(client, TRUST_DOMAIN)
    assert before.valid, before.error

    assert server.terminate() == 0, server.log()
    assert agent.terminate() == 0, agent.log()
    launched = time.monotonic()
    agent.start()
    listening = time.monotonic()
    with WorkloadApiClient(socket_path=agent.endpoint) as client:
        first = fetch(client, TRUST_DOMAIN)
    figures.add(
        agent_start_s=listening - launched,
        first_fetch=first.error or "OK",
        first_fetch_ms=first.latency * 1000,
        same_svid=first.serial == before.serial,
        valid_for_s=(first.not_after - first.ended).total_seconds() if first.ok else 0.0,
    )
    figures.report()

    assert first.ok, f"the restarted agent refused the first fetch: {first.error}"
    assert first.valid
    assert first.chains
    assert first.spiffe_id == WORKLOAD
    assert first.not_after - first.ended > timedelta(minutes=30)
