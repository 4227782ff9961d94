"""Text from users and servers made safe to print on a terminal.

Registration entries, selectors, hints, agent selectors and server error messages carry text that
whoever may create an entry (or attest a node) chose. Printed raw, a control character in it can
move the cursor, rewrite earlier lines, retitle the terminal, hide text, or fake a line of
output (a newline followed by ``Admin : true``). Text output therefore shows every such
character as an escape, as Python writes it in a string literal: ``\\n``, ``\\x1b``,
``\\u202e``. The characters escaped are the C0 and C1 controls, DEL, the Unicode line and
paragraph separators and the bidirectional formatting characters (which reorder what is shown).
A backslash is left alone, so ordinary text (a Windows path) reads as written.

:func:`printable` is for a value inside a line; :func:`printable_lines` for text the CLI itself
lays out in lines and columns (it keeps newlines and tabs) and is applied to every line the CLI
writes, as the last line of defence. JSON output needs neither: the encoder escapes control
characters itself.
"""

from __future__ import annotations

__all__ = ["printable", "printable_lines"]

_SPECIAL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNICODE_CONTROLS = (
    "\u061c",  # arabic letter mark
    "\u200e",  # left-to-right mark
    "\u200f",  # right-to-left mark
    "\u2028",  # line separator
    "\u2029",  # paragraph separator
    *(chr(code) for code in range(0x202A, 0x202F)),  # embeddings and overrides
    *(chr(code) for code in range(0x2066, 0x206A)),  # isolates
)


def _escape(character: str) -> str:
    special = _SPECIAL.get(character)
    if special is not None:
        return special
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_ESCAPED = [
    *(chr(code) for code in range(0x20)),
    *(chr(code) for code in range(0x7F, 0xA0)),
    *_UNICODE_CONTROLS,
]
_TABLE = str.maketrans({character: _escape(character) for character in _ESCAPED})
_LAYOUT_TABLE = str.maketrans(
    {character: _escape(character) for character in _ESCAPED if character not in "\n\t"}
)


def printable(text: str) -> str:
    """``text`` with every control character escaped (newlines and tabs included)."""
    # Every escaped character is one ``str.isprintable`` refuses; most text has none of them,
    # and the check is far cheaper than the translation (the CLI prints millions of values).
    if text.isprintable():
        return text
    return text.translate(_TABLE)


def printable_lines(text: str) -> str:
    """``text`` with every control character escaped except newlines and tabs, which the CLI
    uses to lay out its own output."""
    if text.isprintable():
        return text
    return text.translate(_LAYOUT_TABLE)
