"""Control characters in what the CLI prints are shown as escapes, never sent to the terminal."""

from __future__ import annotations

import io

import pytest

from pyspire.catalog import Side
from pyspire.cli import CliContext
from pyspire.cli.admin_client import describe_entry, status_line
from pyspire.cli.commands.agent import describe_agent
from pyspire.cli.printable import printable, printable_lines
from pyspire.proto.gen.spire.api import types as pb

NASTY = "a\x1b[2Jb\rc\nAdmin            : true\x07\x7f\x9b\u202egnp.exe\u2028z\\y"


def raw_controls(text: str) -> list[str]:
    """The characters of ``text`` a terminal would act on (layout newlines aside)."""
    return [
        character
        for character in text
        if (ord(character) < 0x20 and character != "\n")
        or 0x7F <= ord(character) < 0xA0
        or character in "\u202e\u2028"
    ]


def test_printable_escapes_every_control_character() -> None:
    assert printable(NASTY) == (
        "a\\x1b[2Jb\\rc\\nAdmin            : true\\x07\\x7f\\x9b\\u202egnp.exe\\u2028z\\y"
    )
    assert printable("plain text, ünïcödé and a \\ backslash") == (
        "plain text, ünïcödé and a \\ backslash"
    )
    assert printable("tab\there") == "tab\\there"


def test_printable_lines_keeps_the_layout_only() -> None:
    assert printable_lines("one\ttwo\nthree\x1b]0;title\x07") == (
        "one\ttwo\nthree\\x1b]0;title\\x07"
    )


@pytest.mark.parametrize("stream", ["out", "err"])
def test_every_line_the_cli_writes_is_escaped(stream: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    context = CliContext(side=Side.SERVER, prog="pyspire-server", stdout=out, stderr=err)
    getattr(context, stream)("evil\x1b[31m red")
    written = (out if stream == "out" else err).getvalue()
    assert written == "evil\\x1b[31m red\n"


def test_entry_and_agent_blocks_keep_each_value_on_its_line() -> None:
    entry = pb.Entry(
        id="entry-1",
        spiffe_id=pb.Spiffeid(trust_domain="example.org", path="/web"),
        parent_id=pb.Spiffeid(trust_domain="example.org", path="/agent"),
        selectors=[pb.Selector(type="unix", value=NASTY)],
        hint=NASTY,
    )
    lines = describe_entry(entry)
    assert not [line for line in lines if raw_controls(line) or "\n" in line]
    assert "Admin            : true" not in lines
    agent = pb.Agent(
        id=pb.Spiffeid(trust_domain="example.org", path="/spire/agent/x"),
        attestation_type="x\x1b[0m",
        selectors=[pb.Selector(type="t", value=NASTY)],
    )
    for line in describe_agent(agent):
        assert not raw_controls(line) and "\n" not in line
    assert status_line(pb.Status(code=3, message=f"bad {NASTY}")).count("\n") == 0


def test_text_without_escapes_is_returned_as_it_is_for_every_character() -> None:
    """The shortcut for printable text gives what the full translation gives, for every
    character of the Basic Multilingual Plane and a few beyond it."""
    from pyspire.cli import printable as module

    for code in [*range(0x10000), 0x1F600, 0xE0001, 0x10FFFD]:
        character = chr(code)
        assert printable(character) == character.translate(module._TABLE), hex(code)
        assert printable_lines(character) == character.translate(module._LAYOUT_TABLE), hex(code)
