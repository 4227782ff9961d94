"""Selectors: ``type:value`` parsing, validation and subset matching."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyspire_sdk.errors import InvalidArgumentError, InvalidSelectorError
from pyspire_sdk.selector import Selector, selectors_match


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("unix:uid:0", "unix", "uid:0"),
        ("k8s:ns:default", "k8s", "ns:default"),
        ("docker:label:com.example:name=web", "docker", "label:com.example:name=web"),
        ("aws_iid:tag:Name:", "aws_iid", "tag:Name:"),
        ("x:y", "x", "y"),
        ("spiffe_id:spiffe://example.org/a", "spiffe_id", "spiffe://example.org/a"),
    ],
)
def test_parse_splits_on_the_first_colon_only(text: str, kind: str, value: str) -> None:
    selector = Selector.parse(text)
    assert (selector.type, selector.value) == (kind, value)
    assert str(selector) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("unix", "expected 'type:value'"),
        ("", "expected 'type:value'"),
        (":uid:0", "selector type is empty"),
        ("unix:", "has an empty value"),
    ],
)
def test_parse_rejects_malformed_text(text: str, reason: str) -> None:
    with pytest.raises(InvalidSelectorError, match=reason) as raised:
        Selector.parse(text)
    assert str(raised.value).startswith(f"invalid selector {text!r}")
    assert isinstance(raised.value, InvalidArgumentError)


def test_constructor_validates() -> None:
    with pytest.raises(InvalidSelectorError, match="must not contain ':'"):
        Selector("a:b", "c")
    with pytest.raises(InvalidSelectorError, match="empty"):
        Selector("", "c")
    with pytest.raises(InvalidSelectorError, match="empty value"):
        Selector("unix", "")


def test_value_semantics_order_and_immutability() -> None:
    first = Selector("unix", "uid:0")
    assert first == Selector.parse("unix:uid:0")
    assert hash(first) == hash(Selector.parse("unix:uid:0"))
    assert sorted([Selector("unix", "uid:1"), Selector("docker", "x"), first]) == [
        Selector("docker", "x"),
        first,
        Selector("unix", "uid:1"),
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.value = "uid:1"  # type: ignore[misc]


def test_selectors_match_is_a_subset_test() -> None:
    available = [Selector("unix", "uid:0"), Selector("unix", "gid:0"), Selector("k8s", "ns:a")]
    assert selectors_match([Selector("unix", "uid:0")], available)
    assert selectors_match([Selector("unix", "uid:0"), Selector("k8s", "ns:a")], available)
    assert selectors_match([], available)
    assert not selectors_match([Selector("unix", "uid:1")], available)
    assert not selectors_match([Selector("unix", "uid:0"), Selector("k8s", "ns:b")], available)
    assert selectors_match([Selector("unix", "uid:0")], frozenset(available))
    assert selectors_match([Selector("unix", "uid:0")], iter(available))


@given(
    kind=st.text(min_size=1).filter(lambda text: ":" not in text),
    value=st.text(min_size=1),
)
def test_property_format_parse_round_trip(kind: str, value: str) -> None:
    selector = Selector(kind, value)
    assert Selector.parse(str(selector)) == selector


def test_errors_about_huge_selectors_stay_short() -> None:
    """Messages quote a caller's text; a megabyte of it must not become a megabyte of error."""
    for make in (
        lambda: Selector("a:" * 500_000, "v"),
        lambda: Selector.parse("x" * 1_000_000),
        lambda: Selector.parse(":" + "a" * 1_000_000),
    ):
        with pytest.raises(InvalidSelectorError) as caught:
            make()
        assert len(str(caught.value)) < 300
