"""The ``file`` bundle publisher in a real ``pyspire-server``: the published file follows the
trust bundle, at start and after a change made through the Bundle API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import (
    TRUST_DOMAIN,
    ProcessError,
    ServerProcess,
    ServerSettings,
    free_port,
    short_temp_dir,
    wait_for,
)

from pyspire.proto.gen.spire.api import types as types_pb
from pyspire.proto.gen.spire.api.server.bundle import v1 as bundle_pb
from pyspire_sdk.spiffeid import TrustDomain
from pyspire_sdk.testing import TestAuthority

pytestmark = pytest.mark.slow

WAIT = 20.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    root = short_temp_dir()
    (root / "public").mkdir()
    process = ServerProcess(
        ServerSettings(
            root=root,
            port=free_port(),
            extra_plugins=f"""
[server.plugins.bundle_publisher.file]
path = "{root / "public" / "bundle.json"}"
""",
        )
    )
    try:
        process.start()
    except ProcessError as error:
        pytest.fail(f"the server did not start: {error}")
    try:
        yield process
    finally:
        process.terminate()


def shown(server: ServerProcess) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(server.cli("bundle", "show", "-format", "spiffe").stdout)
    return document


def published_with_sequence(path: Path, sequence: int) -> dict[str, Any] | None:
    if not path.exists():
        return None
    document: dict[str, Any] = json.loads(path.read_text())
    return document if document.get("spiffe_sequence") == sequence else None


def test_the_published_file_follows_the_trust_bundle(server: ServerProcess) -> None:
    target = server.settings.root / "public" / "bundle.json"
    before = shown(server)
    document = wait_for(
        "the bundle loaded at start to be published",
        lambda: published_with_sequence(target, before["spiffe_sequence"]),
        WAIT,
        server.log(),
    )
    assert document == before
    assert target.stat().st_mode & 0o777 == 0o644

    extra = TestAuthority(TrustDomain(TRUST_DOMAIN))
    appended = server.api(
        lambda client: client.bundle.append_bundle(
            bundle_pb.AppendBundleRequest(x509_authorities=[types_pb.X509Certificate(extra.der)])
        )
    )
    after = wait_for(
        "the changed bundle to be published",
        lambda: published_with_sequence(target, appended.sequence_number),
        WAIT,
        server.log(),
    )
    assert after == shown(server)
    assert len([key for key in after["keys"] if key["use"] == "x509-svid"]) == 2
