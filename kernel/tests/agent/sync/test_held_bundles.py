"""The held bundle answers pass for current only under the digest of exactly what is held."""

from __future__ import annotations

from pyspire.agent.held_bundles import HeldBundles
from pyspire.proto.bundle_digest import answer_digest, bundles_digest
from pyspire_sdk.bundle import Bundle
from pyspire_sdk.spiffeid import TrustDomain

from .fakes import TRUST_DOMAIN

OTHER = TrustDomain("other.org")
ABSENT = TrustDomain("absent.org")
OURS = Bundle(trust_domain=TRUST_DOMAIN, sequence_number=1)
THEIRS = Bundle(trust_domain=OTHER, sequence_number=7)


def holding() -> HeldBundles:
    held = HeldBundles()
    held.hold((b"ours", OURS), {OTHER: (b"theirs", THEIRS), ABSENT: (None, None)})
    return held


def offer(own: bytes, *federated: tuple[TrustDomain, bytes | None]) -> str:
    return bundles_digest(
        answer_digest(own), [(name.name, answer_digest(data)) for name, data in federated]
    )


def test_the_digest_of_what_is_held_gives_it_back() -> None:
    held = holding()
    current = held.current(offer(b"ours", (OTHER, b"theirs"), (ABSENT, None)), [OTHER, ABSENT])
    assert current is not None
    assert current.bundle == OURS
    assert current.federated == {OTHER: THEIRS}
    assert held.current(offer(b"ours"), []) is not None


def test_any_doubt_means_fetching() -> None:
    held = holding()
    assert held.current(None, []) is None
    assert held.current(offer(b"ours, rotated"), []) is None
    assert held.current(offer(b"ours", (OTHER, b"theirs, rotated")), [OTHER]) is None
    # A trust domain the entries name now, never fetched.
    new = TrustDomain("new.org")
    assert held.current(offer(b"ours", (new, None)), [new]) is None
    # The digest of our bundle alone does not cover a federated one.
    assert held.current(offer(b"ours"), [OTHER]) is None
    assert HeldBundles().current(offer(b"ours"), []) is None


def test_our_bundle_alone_may_be_held_and_keeps_the_federated_answers() -> None:
    fresh = HeldBundles()
    assert fresh.current(offer(b"ours"), []) is None
    fresh.hold_own((b"ours", OURS))
    current = fresh.current(offer(b"ours"), [])
    assert current is not None and current.bundle == OURS
    # A trust domain never fetched still means fetching.
    assert fresh.current(offer(b"ours", (OTHER, b"theirs")), [OTHER]) is None

    held = holding()
    newer = Bundle(trust_domain=TRUST_DOMAIN, sequence_number=2)
    held.hold_own((b"newer", newer))
    assert held.current(offer(b"ours", (OTHER, b"theirs")), [OTHER]) is None
    current = held.current(offer(b"newer", (OTHER, b"theirs")), [OTHER])
    assert current is not None
    assert current.bundle == newer
    assert current.federated == {OTHER: THEIRS}
