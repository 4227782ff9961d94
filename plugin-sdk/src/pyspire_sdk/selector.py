"""Selectors: the ``type:value`` facts that attestors report and entries require."""

from __future__ import annotations

__all__ = ["Selector", "selectors_match"]

from collections.abc import Iterable
from dataclasses import dataclass

from pyspire_sdk.errors import InvalidSelectorError
from pyspire_sdk.spiffeid import _shorten


@dataclass(frozen=True, slots=True, order=True)
class Selector:
    """One selector. ``type`` is the attestor's name; ``value`` may itself contain colons."""

    type: str
    value: str

    def __post_init__(self) -> None:
        if not self.type:
            raise InvalidSelectorError("selector type is empty")
        if ":" in self.type:
            raise InvalidSelectorError(
                f"selector type {_shorten(self.type)!r} must not contain ':'"
            )
        if not self.value:
            raise InvalidSelectorError(f"selector {_shorten(self.type)!r} has an empty value")

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``type:value``; only the first colon separates, so ``unix:uid:0`` is fine."""
        kind, separator, value = text.partition(":")
        if not separator:
            raise InvalidSelectorError(
                f"invalid selector {_shorten(text)!r}: expected 'type:value'"
            )
        try:
            return cls(kind, value)
        except InvalidSelectorError as error:
            raise InvalidSelectorError(f"invalid selector {_shorten(text)!r}: {error}") from None

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


def selectors_match(required: Iterable[Selector], available: Iterable[Selector]) -> bool:
    """True when every required selector is among the available ones (subset match)."""
    have = available if isinstance(available, (set, frozenset)) else frozenset(available)
    return all(selector in have for selector in required)
