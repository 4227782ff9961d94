"""Forced rotation with real processes: a server, an agent and a py-spiffe workload while an
operator runs ``localauthority`` through the CLI (in the test's process:
:meth:`ServerProcess.command`). The X.509 authority is prepared, activated, tainted and revoked,
then the JWT authority likewise; throughout, every fetch of the workload returns a valid SVID
that chains to an authority of the bundle it came with, within 30 s of the taint that SVID
chains to an untainted authority, and after the revocation the old authority is gone from the
bundle the workload sees. X509-SVIDs live an hour, so only the taint makes the agent replace
them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography import x509
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ServerSettings,
    free_port,
    short_temp_dir,
    wait_for,
)

from pyspire_sdk.jwt import SUPPORTED_ALGORITHMS, parse_jwt

pytestmark = pytest.mark.slow

WEB = f"spiffe://{TRUST_DOMAIN}/web"
REISSUE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    root = short_temp_dir()
    port = free_port()
    deployed = Deployment.start(
        ServerSettings(root=root, port=port, ca_ttl="24h", default_x509_svid_ttl="1h"),
        AgentSettings(root=root, server_port=port, bootstrap_bundle=root / "bootstrap.pem"),
    )
    try:
        # The re-mint after a taint comes at the next sync rather than anywhere in the spread.
        deployed.register_early_in_taint_spread(WEB, f"unix:uid:{os.getuid()}")
        yield deployed
    finally:
        deployed.stop()


def _key_id(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> str:
    value = certificate.extensions.get_extension_for_class(kind).value
    digest = getattr(value, "digest", None) or getattr(value, "key_identifier", b"")
    return bytes(digest).hex()


class Workload:
    """A py-spiffe client fetching the X.509 context every 200 ms on a thread, keeping for each
    fetch the authority ID (hex subject key ID) its SVID chains to, or the failure."""

    def __init__(self, endpoint: str) -> None:
        from spiffe import WorkloadApiClient

        self.client = WorkloadApiClient(socket_path=endpoint)
        self.outcomes: list[tuple[str, set[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def fetch(self) -> tuple[str, set[str]]:
        """(authority ID the SVID chains to or ``error: ...``, authority IDs of the bundle)."""
        from spiffe import TrustDomain

        try:
            context = self.client.fetch_x509_context(timeout=5)
        except Exception as error:
            return f"error: {error}", set()
        now = datetime.now(UTC)
        leaf = context.default_svid.leaf
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
        authorities = {_key_id(a, x509.SubjectKeyIdentifier): a for a in bundle.x509_authorities}
        issuer = authorities.get(_key_id(leaf, x509.AuthorityKeyIdentifier))
        if issuer is None or not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
            return "error: the SVID does not chain to the bundle or has expired", set(authorities)
        leaf.verify_directly_issued_by(issuer)
        return _key_id(issuer, x509.SubjectKeyIdentifier), set(authorities)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.outcomes.append(self.fetch())

    def __enter__(self) -> Workload:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()


def _show(deployment: Deployment, kind: str) -> dict[str, str]:
    out = deployment.server.command("localauthority", kind, "show", "-output", "json").stdout
    document = json.loads(out)
    return {name: document[name]["authority_id"] for name in ("active", "prepared", "old")}


def _bundle_marks(deployment: Deployment, field: str) -> list[bool]:
    document = json.loads(deployment.server.command("bundle", "show", "-output", "json").stdout)
    return [bool(authority["tainted"]) for authority in document[field]]


def test_x509_prepare_activate_taint_revoke_keeps_the_workload_served(
    deployment: Deployment,
) -> None:
    server = deployment.server
    with Workload(deployment.agent.endpoint) as workload:
        old = _show(deployment, "x509")["active"]
        wait_for("a first SVID", lambda: workload.fetch()[0] == old or None, 20, server.log())

        server.command("localauthority", "x509", "prepare")
        new = _show(deployment, "x509")["prepared"]
        server.command("localauthority", "x509", "activate", "-authorityID", new)
        assert _show(deployment, "x509") == {"active": new, "prepared": "", "old": old}

        server.command("localauthority", "x509", "taint", "-authorityID", old)
        tainted_at = time.monotonic()
        assert sorted(_bundle_marks(deployment, "x509_authorities")) == [False, True]
        wait_for(
            "an SVID of the new authority",
            lambda: workload.fetch()[0] == new or None,
            REISSUE_TIMEOUT,
            deployment.logs(),
        )
        assert time.monotonic() - tainted_at < REISSUE_TIMEOUT
        # The agent's own SVID, of the tainted authority too, is renewed at its next rotation
        # check (every 5 s): revoked before that, the server would no longer trust the agent.
        deployment.agent.wait_for_log("agent SVID renewed", REISSUE_TIMEOUT)

        server.command("localauthority", "x509", "revoke", "-authorityID", old)
        wait_for(
            "a bundle without the revoked authority",
            lambda: workload.fetch() == (new, {new}) or None,
            REISSUE_TIMEOUT,
            deployment.logs(),
        )
        assert _bundle_marks(deployment, "x509_authorities") == [False]
    failures = [outcome for outcome, _ in workload.outcomes if outcome.startswith("error")]
    assert workload.outcomes and not failures, failures[:3]


def test_jwt_prepare_activate_taint_revoke_drops_tokens_of_the_tainted_key(
    deployment: Deployment,
) -> None:
    from spiffe import WorkloadApiClient

    server = deployment.server
    with WorkloadApiClient(socket_path=deployment.agent.endpoint) as client:

        def kid() -> str | None:
            token = client.fetch_jwt_svid(audience={"db"}).token
            return parse_jwt(token, algorithms=SUPPORTED_ALGORITHMS).key_id

        old = _show(deployment, "jwt")["active"]
        assert kid() == old
        server.command("localauthority", "jwt", "prepare")
        new = _show(deployment, "jwt")["prepared"]
        server.command("localauthority", "jwt", "activate", "-authorityID", new)
        server.command("localauthority", "jwt", "taint", "-authorityID", old)
        wait_for("a JWT-SVID of the new key", lambda: kid() == new or None, 20, deployment.logs())
        server.command("localauthority", "jwt", "revoke", "-authorityID", old)
        assert _bundle_marks(deployment, "jwt_authorities") == [False]
        assert kid() == new
