"""The shared flag helper: SPIRE's camelCase spelling and its kebab-case twin."""

from __future__ import annotations

import io

import pytest

from pyspire.cli.flags import CliArgumentParser, ParserExit, UsageError, add_flag, kebab_case


@pytest.mark.parametrize(
    ("camel", "kebab"),
    [
        ("config", "config"),
        ("expandEnv", "expand-env"),
        ("socketPath", "socket-path"),
        ("spiffeID", "spiffe-id"),
        ("bundleEndpointURL", "bundle-endpoint-url"),
        ("x509SVIDTTL", "x509-svidttl"),
        ("federatesWith", "federates-with"),
    ],
)
def test_kebab_case(camel: str, kebab: str) -> None:
    assert kebab_case(camel) == kebab


def parser() -> CliArgumentParser:
    built = CliArgumentParser(prog="tool", stdout=io.StringIO(), stderr=io.StringIO())
    add_flag(built, "socketPath", default="/tmp/api.sock")
    add_flag(built, "expandEnv", action="store_true")
    add_flag(built, "selector", action="append", default=[])
    add_flag(built, "spiffeID", kebab="spiffe-id")
    return built


@pytest.mark.parametrize(
    "argv",
    [
        [
            "-socketPath",
            "/s",
            "-expandEnv",
            "-selector",
            "a:1",
            "-selector",
            "b:2",
            "-spiffeID",
            "x",
        ],
        [
            "--socket-path",
            "/s",
            "--expand-env",
            "--selector",
            "a:1",
            "--selector=b:2",
            "--spiffe-id=x",
        ],
        ["-socketPath=/s", "--expand-env", "-selector=a:1", "--selector", "b:2", "-spiffeID", "x"],
    ],
)
def test_both_spellings_fill_the_same_attribute(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert args.socket_path == "/s"
    assert args.expand_env is True
    assert args.selector == ["a:1", "b:2"]
    assert args.spiffe_id == "x"


def test_defaults_apply_when_no_spelling_is_given() -> None:
    args = parser().parse_args([])
    assert (args.socket_path, args.expand_env, args.selector) == ("/tmp/api.sock", False, [])


def test_flag_names_are_written_without_dashes() -> None:
    with pytest.raises(ValueError, match="without dashes"):
        add_flag(parser(), "-config")


def test_usage_errors_raise_instead_of_exiting() -> None:
    with pytest.raises(UsageError) as caught:
        parser().parse_args(["--socket-path"])
    assert caught.value.prog == "tool"
    assert "expected one argument" in caught.value.message


def test_help_goes_to_the_given_stream_and_raises_exit_zero() -> None:
    stdout = io.StringIO()
    built = CliArgumentParser(prog="tool", stdout=stdout, stderr=io.StringIO())
    add_flag(built, "expandEnv", action="store_true", help="expand variables")
    with pytest.raises(ParserExit) as caught:
        built.parse_args(["-h"])
    assert caught.value.status == 0
    assert "-expandEnv, --expand-env" in stdout.getvalue()
