"""Forced rotation across three tiers in real processes: a root ``pyspire-server`` with its
agent, two downstream servers (two branches) whose CAs come from the root through the ``spire``
upstream authority, and an agent and workload under each branch.

The root's X.509 authority is prepared and activated. Then each branch in turn prepares and
activates its X.509 authority (a new CA from the root's new authority) and, as SPIRE requires on
a server with an upstream authority, taints the old root with ``upstreamauthority taint`` rather
than its own old authority (``localauthority x509 taint``/``revoke`` are refused there), until its
workload's SVID comes from the new CA. Once no SVID of either branch chains to the old root, the
first branch revokes it (``upstreamauthority revoke``) and its agent's bundle drops it. Before,
between and during the steps, cross-branch checks run: mutual TLS between the two branch
workloads (each trusting the roots of the bundle its agent gave it) and a JWT-SVID of each branch
validated at the other branch's agent. Every check must pass.

Revoking the old root before the second branch has moved off it breaks the first branch's trust
in the second (its SVIDs still chain to the old root): the order above is the one that holds.

The quick form (the test suite) runs the cross-branch checks once between the steps and at most
once a second during them; the full form (``scripts/long_tests.py``) runs them three times
between the steps and at every poll (every 50 ms) during them.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from forms import by_form
from processes import (
    TRUST_DOMAIN,
    AgentSettings,
    Deployment,
    ProcessError,
    ServerSettings,
    free_port,
    run_workload,
    short_temp_dir,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.quick_form]

DOWNSTREAM_SERVER = f"spiffe://{TRUST_DOMAIN}/downstream/server"
FIRST = f"spiffe://{TRUST_DOMAIN}/branch/first"
SECOND = f"spiffe://{TRUST_DOMAIN}/branch/second"
UID_SELECTOR = f"unix:uid:{os.getuid()}"
TIMEOUT = 30.0
ROUNDS = by_form(quick=1, full=3)
"""Cross-branch checks between two steps."""
GAP = by_form(quick=1.0, full=0.0)
"""Seconds at least between two cross-branch checks while a step is under way."""
AUDIENCE = "cross-branch"


@dataclass
class Tiers:
    root: Deployment
    first: Deployment
    second: Deployment


def _downstream_svid_served(root: Deployment, directory: Path) -> bool | None:
    try:
        answer = run_workload(root.agent.endpoint, "x509", str(directory))
    except ProcessError:
        return None
    return True if answer["spiffe_id"] == DOWNSTREAM_SERVER else None


def _branch(root: Deployment, root_port: int, workload: str) -> Deployment:
    directory, port = short_temp_dir(), free_port()
    upstream = f"""
[server.plugins.upstream_authority.spire]
server_address = "127.0.0.1"
server_port = {root_port}
workload_api_socket = "{root.agent.socket_path}"
"""
    return Deployment.start(
        ServerSettings(root=directory, port=port, extra_plugins=upstream),
        AgentSettings(root=directory, server_port=port, bootstrap_bundle=directory / "b.pem"),
        entries=[(workload, [UID_SELECTOR])],
    )


@pytest.fixture(scope="module")
def tiers() -> Iterator[Tiers]:
    root_dir, root_port = short_temp_dir(), free_port()
    root = Deployment.start(
        ServerSettings(root=root_dir, port=root_port),
        AgentSettings(root=root_dir, server_port=root_port, bootstrap_bundle=root_dir / "b.pem"),
    )
    started = [root]
    try:
        root.server.cli(
            "entry", "create", "-spiffeID", DOWNSTREAM_SERVER, "-parentID", root.agent_id,
            "-selector", UID_SELECTOR, "-downstream",
        )  # fmt: skip
        probe = root_dir / "probe"
        probe.mkdir()
        wait_for(
            "the root agent to serve the downstream server's SVID",
            lambda: _downstream_svid_served(root, probe),
            TIMEOUT,
        )
        started.append(_branch(root, root_port, FIRST))
        started.append(_branch(root, root_port, SECOND))
        tiers = Tiers(*started)
        _wait_for_jwt_keys(tiers)
        yield tiers
    finally:
        for deployment in reversed(started):
            deployment.stop()


def _wait_for_jwt_keys(tiers: Tiers) -> None:
    """Until each branch validates the other's JWT-SVIDs: the first branch published its key
    before the second existed, and learns the second's key by following the root's bundle."""
    from spiffe.errors import PySpiffeError

    first, second = tiers.first.agent.endpoint, tiers.second.agent.endpoint

    def validated() -> bool | None:
        try:
            return (
                _jwt_validated(first, second) == FIRST and _jwt_validated(second, first) == SECOND
            )
        except PySpiffeError:
            return None

    wait_for("each branch to validate the other's JWT-SVIDs", validated, TIMEOUT)


class Credentials:
    """A branch workload's X509-SVID (chain and key) and its bundle's roots, as PEM files."""

    def __init__(self, endpoint: str, directory: Path) -> None:
        from spiffe import TrustDomain, WorkloadApiClient

        with WorkloadApiClient(socket_path=endpoint) as client:
            context = client.fetch_x509_context(timeout=10)
        svid = context.default_svid
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
        self.spiffe_id = str(svid.spiffe_id)
        directory.mkdir(parents=True, exist_ok=True)
        self.chain = directory / "chain.pem"
        self.chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in svid.cert_chain))
        self.key = directory / "key.pem"
        self.key.touch(mode=0o600)
        self.key.write_bytes(
            svid.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        if bundle is None:
            raise ProcessError(f"the agent at {endpoint} gave no bundle for {TRUST_DOMAIN}")
        self.roots = directory / "roots.pem"
        self.roots.write_bytes(
            b"".join(a.public_bytes(Encoding.PEM) for a in bundle.x509_authorities)
        )

    def context(self, purpose: int) -> ssl.SSLContext:
        context = ssl.SSLContext(purpose)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(self.chain, self.key)
        context.load_verify_locations(self.roots)
        return context


def _peer_id(connection: ssl.SSLSocket) -> str:
    der = connection.getpeercert(binary_form=True)
    assert der is not None
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    [uri] = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return str(uri)


def _mutual_tls(server: Credentials, client: Credentials) -> tuple[str, str]:
    """A TLS handshake, each side verifying the other against its own bundle's roots; the
    SPIFFE IDs each side saw (the server's view, the client's view)."""
    near, far = socket.socketpair()
    seen: dict[str, str | BaseException] = {}

    def serve() -> None:
        try:
            with server.context(ssl.PROTOCOL_TLS_SERVER).wrap_socket(far, server_side=True) as tls:
                seen["server"] = _peer_id(tls)
                tls.sendall(b"ok")
        except BaseException as error:  # reported by the caller
            seen["server"] = error

    near.settimeout(TIMEOUT)
    far.settimeout(TIMEOUT)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client.context(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(near) as tls:
            client_saw = _peer_id(tls)
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(TIMEOUT)
    server_saw = seen.get("server")
    if isinstance(server_saw, BaseException):
        raise server_saw
    return str(server_saw), client_saw


def _jwt_validated(issuing: str, validating: str) -> str:
    from spiffe import WorkloadApiClient

    with WorkloadApiClient(socket_path=issuing) as client:
        token = client.fetch_jwt_svid(audience={AUDIENCE}).token
    with WorkloadApiClient(socket_path=validating) as client:
        return str(client.validate_jwt_svid(token, AUDIENCE).spiffe_id)


@dataclass
class CrossBranch:
    """Runs the cross-branch checks and keeps the count of checks and failures."""

    tiers: Tiers
    directory: Path
    checks: int = 0
    failures: list[str] = field(default_factory=list)
    last: float = float("-inf")

    def check(self, phase: str) -> None:
        self.checks += 1
        self.last = time.monotonic()
        try:
            first = Credentials(self.tiers.first.agent.endpoint, self.directory / "first")
            second = Credentials(self.tiers.second.agent.endpoint, self.directory / "second")
            assert _mutual_tls(first, second) == (SECOND, FIRST)
            assert _mutual_tls(second, first) == (FIRST, SECOND)
            first_agent = self.tiers.first.agent.endpoint
            second_agent = self.tiers.second.agent.endpoint
            assert _jwt_validated(first_agent, second_agent) == FIRST
            assert _jwt_validated(second_agent, first_agent) == SECOND
        except Exception as error:
            self.failures.append(f"{phase}: {type(error).__name__}: {error}")

    def rounds(self, phase: str) -> None:
        for _ in range(ROUNDS):
            self.check(phase)

    def during(self, phase: str) -> None:
        """A check at a poll while a step is under way, unless one ran less than
        :data:`GAP` seconds ago."""
        if time.monotonic() - self.last >= GAP:
            self.check(phase)


def _show(deployment: Deployment) -> dict[str, str]:
    """The authority IDs of the server's X.509 slots, through the admin API in this process:
    the steps themselves go through the CLI, but polling with ``localauthority x509 show``
    would cost an interpreter start a poll."""
    from pyspire.proto.gen.spire.api.server.localauthority import v1 as la_pb

    state = deployment.server.api(
        lambda client: la_pb.LocalAuthorityStub(
            client.channel, timeout=client.timeout
        ).get_x509_authority_state(la_pb.GetX509AuthorityStateRequest())
    )
    return {
        "active": state.active.authority_id,
        "prepared": state.prepared.authority_id,
        "old": state.old.authority_id,
    }


def _rotate(deployment: Deployment) -> tuple[str, str]:
    """Prepare and activate a new X.509 authority; (old, new) authority IDs."""
    old = _show(deployment)["active"]
    deployment.server.cli("localauthority", "x509", "prepare")
    new = _show(deployment)["prepared"]
    assert new and new != old
    deployment.server.cli("localauthority", "x509", "activate", "-authorityID", new)
    assert _show(deployment) == {"active": new, "prepared": "", "old": old}
    return old, new


def _leaf_issuer(endpoint: str) -> str:
    """The authority ID (hex subject key ID) of the CA that signed the workload's SVID."""
    from spiffe import WorkloadApiClient

    with WorkloadApiClient(socket_path=endpoint) as client:
        leaf = client.fetch_x509_svid(timeout=10).leaf
    identifier = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return bytes(identifier.key_identifier or b"").hex()


def _root_ids(endpoint: str, directory: Path) -> set[str]:
    roots = x509.load_pem_x509_certificates(Credentials(endpoint, directory).roots.read_bytes())
    return {
        bytes(root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest).hex()
        for root in roots
    }


def _move_off(branch: Deployment, old_root: str, checks: CrossBranch) -> None:
    """Rotate ``branch``'s X.509 authority (the new CA comes from the root's new authority)
    and taint ``old_root`` there, checking until its workload's SVID comes from the new CA.
    Tainting or revoking the branch's own old authority is refused: it has an upstream."""
    old, new = _rotate(branch)
    checks.rounds("branch rotated")
    for step in ("taint", "revoke"):
        refused = branch.server.cli(
            "localauthority", "x509", step, "-authorityID", old, check=False
        )
        assert refused.returncode != 0
        assert "upstream authority" in refused.stdout + refused.stderr

    branch.server.cli("upstreamauthority", "taint", "-subjectKeyID", old_root)

    def reminted() -> bool | None:
        checks.during("old root tainted")
        return _leaf_issuer(branch.agent.endpoint) == new or None

    wait_for("an SVID from the branch's new CA", reminted, TIMEOUT, branch.logs())


def test_cross_branch_checks_pass_through_root_and_branch_rotation(
    tiers: Tiers, tmp_path: Path
) -> None:
    checks = CrossBranch(tiers, tmp_path)
    checks.rounds("before")

    old_root, _ = _rotate(tiers.root)
    checks.rounds("root rotated")

    _move_off(tiers.first, old_root, checks)
    checks.rounds("first branch re-minted")
    # Revoking the old root is safe once no SVID of either branch chains to it.
    _move_off(tiers.second, old_root, checks)
    checks.rounds("second branch re-minted")

    tiers.first.server.cli("upstreamauthority", "revoke", "-subjectKeyID", old_root)
    endpoint, probe = tiers.first.agent.endpoint, tmp_path / "probe"

    def revoked() -> bool | None:
        checks.during("old root revoked")
        return old_root not in _root_ids(endpoint, probe) or None

    wait_for("the first branch's bundle without the old root", revoked, TIMEOUT)
    checks.rounds("after revocation")

    print(f"cross-branch checks: {checks.checks}, failures: {len(checks.failures)}")
    assert checks.checks >= 7 * ROUNDS
    assert not checks.failures, checks.failures[:3]


def test_a_root_authority_tainted_at_the_root_has_every_branch_replace_its_ca(
    tiers: Tiers, tmp_path: Path
) -> None:
    """SPIRE's tainted upstream authorities, with nothing done on the branches: the root's
    operator rotates the root's X.509 authority and taints the old one there. Each branch sees
    the taint in the root's bundle, prepares a CA from the root's new authority and activates it
    at once, then marks the old authority tainted in its own bundle, so its agent re-mints its
    workload's SVID from the new CA (the SVID's half-life is an hour away: only the taint
    explains a re-mint within the minute). The cross-branch checks keep passing throughout."""
    checks = CrossBranch(tiers, tmp_path)
    branches = {"first": tiers.first, "second": tiers.second}
    before = {name: _show(branch)["active"] for name, branch in branches.items()}
    old_root, _ = _rotate(tiers.root)
    checks.rounds("root rotated again")

    tiers.root.server.cli("localauthority", "x509", "taint", "-authorityID", old_root)

    for name, branch in branches.items():

        def replaced(branch: Deployment = branch, name: str = name) -> bool | None:
            checks.during("old root authority tainted at the root")
            active = _show(branch)["active"]
            if active == before[name]:
                return None
            return _leaf_issuer(branch.agent.endpoint) == active or None

        wait_for(f"the {name} branch to replace its CA", replaced, 2 * TIMEOUT, branch.logs())
        assert _show(branch)["old"] == before[name]
    checks.rounds("branches replaced their CAs")

    print(f"cross-branch checks: {checks.checks}, failures: {len(checks.failures)}")
    assert not checks.failures, checks.failures[:3]
