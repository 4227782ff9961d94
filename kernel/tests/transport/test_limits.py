"""Connection counts: overall, per address while unverified, and release."""

from __future__ import annotations

import pytest

from pyspire.transport.limits import Admitted, ConnectionCounts, ConnectionLimits, Refused
from pyspire_sdk.errors import InvalidArgumentError


def admitted(result: Admitted | Refused) -> Admitted:
    assert isinstance(result, Admitted), result
    return result


def test_overall_bound() -> None:
    counts = ConnectionCounts(ConnectionLimits(max_connections=2))
    first = admitted(counts.admit("10.0.0.1"))
    admitted(counts.admit("10.0.0.2"))
    refused = counts.admit("10.0.0.3")
    assert refused == Refused("2 connections are open")
    counts.release(first)
    counts.release(first)  # twice is harmless
    assert counts.total == 1
    admitted(counts.admit("10.0.0.3"))


def test_per_address_bound_counts_only_unverified_connections() -> None:
    counts = ConnectionCounts(ConnectionLimits(max_connections=10, max_unverified_per_address=2))
    one = admitted(counts.admit("10.0.0.1"))
    two = admitted(counts.admit("10.0.0.1"))
    refused = counts.admit("10.0.0.1")
    assert isinstance(refused, Refused)
    assert "without a verified client certificate" in refused.reason
    admitted(counts.admit("10.0.0.2"))  # another address has its own share

    counts.verified(one)  # an agent with an SVID no longer counts against its address
    assert counts.unverified_from("10.0.0.1") == 1
    three = admitted(counts.admit("10.0.0.1"))
    counts.release(one)
    assert counts.unverified_from("10.0.0.1") == 2
    counts.release(two)
    counts.release(three)
    assert counts.unverified_from("10.0.0.1") == 0
    assert counts.total == 1


def test_without_a_per_address_bound_only_the_total_counts() -> None:
    counts = ConnectionCounts(ConnectionLimits(max_connections=3))
    for _ in range(3):
        admitted(counts.admit(""))
    assert isinstance(counts.admit(""), Refused)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_connections", 0),
        ("max_unverified_per_address", 0),
        ("handshake_timeout", 0.0),
        ("first_request_timeout", -1.0),
        ("idle_timeout", 0.0),
    ],
)
def test_limits_must_be_positive(field: str, value: float) -> None:
    arguments: dict[str, float] = {"max_connections": 1, field: value}
    with pytest.raises(InvalidArgumentError, match=f"{field}: must be greater than zero"):
        ConnectionLimits(**arguments)  # type: ignore[arg-type]
