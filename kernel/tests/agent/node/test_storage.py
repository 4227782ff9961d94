"""The agent's persisted state: round trip, file modes, atomic writes, and every way a stored
state can be unusable (reported clearly, treated as no state)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyspire.agent.storage import STATE_FILE_NAME, AgentState, AgentStateError, AgentStateStore
from pyspire_sdk.bundle import Bundle, JwtAuthority, X509Authority
from pyspire_sdk.model import X509Svid
from pyspire_sdk.spiffeid import SpiffeId, TrustDomain

from .conftest import TD

AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/abc")


def issue(uri: str | None) -> tuple[bytes, bytes]:
    """A CA certificate and a leaf for ``uri`` (no SAN when None), both DER."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC).replace(microsecond=0)
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
    )
    if uri is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    leaf = builder.sign(ca_key, hashes.SHA256())
    return (
        ca.public_bytes(serialization.Encoding.DER),
        leaf.public_bytes(serialization.Encoding.DER),
    )


def make_state(uri: str = str(AGENT)) -> AgentState:
    ca, leaf = issue(uri)
    certificate = x509.load_der_x509_certificate(leaf)
    jwt_key = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    bundle = Bundle(
        TD,
        x509_authorities=(X509Authority(ca), X509Authority(leaf, tainted=True)),
        jwt_authorities=(
            JwtAuthority(
                "kid-1",
                jwt_key,
                expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(days=1),
                tainted=True,
            ),
        ),
        sequence_number=7,
        refresh_hint=60,
    )
    svid = X509Svid(spiffe_id=AGENT, cert_chain=(leaf,), expires_at=certificate.not_valid_after_utc)
    return AgentState(svid=svid, key_id="agent-svid-B", reattestable=True, bundle=bundle)


@pytest.fixture
def store(tmp_path: Path) -> AgentStateStore:
    return AgentStateStore(tmp_path / "deep" / "data", TD)


async def test_state_round_trips_with_private_modes(store: AgentStateStore) -> None:
    state = make_state()
    assert await store.read() is None
    await store.save(state)
    assert await store.read() == state
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path.parent.parent).st_mode) == 0o700
    document = json.loads(store.path.read_text())
    assert document["svid"].startswith("-----BEGIN CERTIFICATE-----")
    assert document["bundle"]["spiffe_sequence"] == 7
    # Rewrites replace the file whole and leave no temporary files behind.
    second = make_state()
    await store.save(second)
    assert await store.read() == second
    assert os.listdir(store.path.parent) == [STATE_FILE_NAME]
    await store.clear()
    assert await store.read() is None
    await store.clear()


def rewrite(store: AgentStateStore, change: Any) -> None:
    document = json.loads(store.path.read_text())
    change(document)
    store.path.write_text(json.dumps(document))


_, _FOREIGN_LEAF = issue("spiffe://example.org/workload")
_, _NO_SAN_LEAF = issue(None)


def _pem(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.pop("key_id"), r"'key_id' is missing"),
        (lambda d: d.update(version=2), r"unknown version 2"),
        (lambda d: d.update(trust_domain="other.org"), r"belongs to trust domain 'other.org'"),
        (lambda d: d.update(reattestable="yes"), r"'reattestable' must be of type bool"),
        (lambda d: d.update(key_id="a/b"), r"key_id contains '/'"),
        (lambda d: d.update(svid="garbage"), r"'svid' is not a PEM certificate chain"),
        (lambda d: d.update(svid=_pem(_NO_SAN_LEAF)), r"'svid' is not an X509-SVID"),
        (lambda d: d.update(svid=_pem(_FOREIGN_LEAF)), r"not an agent of 'example.org'"),
        (lambda d: d["bundle"].update(keys=[]), r"'bundle' has no X\.509 authority"),
        (lambda d: d["bundle"].update(keys=5), r"'bundle' is not a SPIFFE bundle"),
        (
            lambda d: d["bundle_details"]["jwt_authorities"].clear(),
            r"'bundle_details' lacks JWT authority 'kid-1'",
        ),
    ],
)
async def test_an_unusable_state_is_reported_and_ignored(
    store: AgentStateStore, change: Any, reason: str
) -> None:
    await store.save(make_state())
    rewrite(store, change)
    with pytest.raises(AgentStateError) as caught:
        await store.read()
    assert str(store.path) in str(caught.value)
    assert caught.match(reason)
    with structlog.testing.capture_logs() as logs:
        assert await store.load() is None
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["reason"] == str(caught.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: b"",
        lambda data: b"\xff\xfe\x00",
        lambda data: b"[1, 2]",
    ],
)
async def test_a_partial_or_garbled_file_is_no_state(store: AgentStateStore, damage: Any) -> None:
    await store.save(make_state())
    store.path.write_bytes(damage(store.path.read_bytes()))
    with pytest.raises(AgentStateError, match=r"is unusable: (not valid JSON|expected a JSON)"):
        await store.read()
    assert await store.load() is None


async def test_a_write_that_cannot_happen_leaves_the_old_state(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = AgentStateStore(blocker / "data", TD)
    with pytest.raises(AgentStateError, match=r"cannot write agent state"):
        await store.save(make_state())


async def test_a_bundle_of_another_trust_domain_is_not_saved(store: AgentStateStore) -> None:
    state = make_state()
    foreign = Bundle(TrustDomain("other.org"), state.bundle.x509_authorities)
    with pytest.raises(ValueError, match=r"trust domain 'other.org'"):
        await store.save(AgentState(state.svid, state.key_id, state.reattestable, foreign))
