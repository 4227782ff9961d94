"""One join token, many agents racing for it: exactly one attestation may succeed.

Forty clients, each from its own loopback address (127.0.0.10 to 127.0.0.49, so the server's
one-attestation-per-second-per-address limit lets every one through), open their connections
and then send AttestAgent with the same token at the same moment. Exactly one gets an agent
SVID; every other gets a clear refusal (never UNKNOWN); the server lists one agent.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Iterator

import pytest
from channels import race_join_token
from figures import Figures
from processes import ServerProcess, ServerSettings, free_port, short_temp_dir

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

RACERS = 40
FIRST_ADDRESS = 10


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    root = short_temp_dir()
    process = ServerProcess(ServerSettings(root=root, port=free_port()))
    try:
        process.start()
        yield process
    finally:
        process.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_join_token_race(server: ServerProcess, figures: Figures) -> None:
    token = server.generate_token()

    outcomes = asyncio.run(race_join_token([server.settings.port], token, RACERS, FIRST_ADDRESS))
    agents = server.agent_ids()
    counted = Counter(outcomes)
    figures.add(
        racers=RACERS,
        succeeded=counted["OK"],
        refused=",".join(f"{name}:{count}" for name, count in sorted(counted.items())),
        agents_listed=len(agents),
    )
    figures.report()

    assert counted["OK"] == 1, counted
    assert "UNKNOWN" not in counted
    assert len(agents) == 1
