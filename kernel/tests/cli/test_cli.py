"""The ``pyspire-server`` / ``pyspire-agent`` command lines, in-process and as installed scripts."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from pyspire.catalog import Discovery, Side
from pyspire.cli import CliContext, run_cli
from pyspire.cli.agent import main as agent_main
from pyspire.cli.server import main as server_main
from pyspire_sdk.config import setting
from pyspire_sdk.plugin import NoConfig, PluginRegistration, hookimpl


@dataclass(frozen=True, kw_only=True)
class FakeStoreConfig:
    """Settings of the fake datastore."""

    database_path: str = setting(default="store.db", description="where the fake keeps data")


class FakePlugin:
    """A plugin object; the CLI never creates one, the registration only needs a factory."""

    async def configure(self, config: object, host: object) -> None:
        return None

    async def close(self) -> None:
        return None


def registration(
    name: str, config_type: type[object] = NoConfig
) -> list[PluginRegistration[object, FakePlugin]]:
    return [
        PluginRegistration(
            name=name,
            config_type=config_type,
            factory=FakePlugin,
            description=f"fake {name} plugin",
        )
    ]


def fake_module() -> types.ModuleType:
    """An in-process plugin module offering one plugin of each type the two sides require."""
    module = types.ModuleType("pyspire_fake_plugins")
    hooks: dict[str, Callable[[], object]] = {
        "pyspire_datastores": lambda: registration("fakestore", FakeStoreConfig),
        "pyspire_key_managers": lambda: registration("fakekeys"),
        "pyspire_agent_node_attestors": lambda: registration("fakenode"),
        "pyspire_server_node_attestors": lambda: registration("fakenode"),
        "pyspire_workload_attestors": lambda: registration("fakeworkload"),
    }
    for name, function in hooks.items():
        function.__name__ = name
        setattr(module, name, hookimpl(function))
    return module


SERVER_TOML = """\
[server]
trust_domain = "example.org"
data_dir = "/var/lib/pyspire/server"

[server.plugins.datastore.fakestore]
database_path = "/var/lib/pyspire/server/datastore.db"

[server.plugins.key_manager.fakekeys]

[server.plugins.node_attestor.fakenode]
"""

AGENT_TOML = """\
[agent]
trust_domain = "example.org"
server_address = "127.0.0.1"
server_port = 8081
trust_bundle_path = "/etc/pyspire/bundle.pem"

[agent.plugins.key_manager.fakekeys]
[agent.plugins.node_attestor.fakenode]
[agent.plugins.workload_attestor.fakeworkload]
"""


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def run(side: Side, *argv: str, environ: dict[str, str] | None = None) -> Result:
    """Run one command line in-process with the fake plugins installed."""
    stdout, stderr = io.StringIO(), io.StringIO()
    context = CliContext(
        side=side,
        prog=f"pyspire-{side}",
        stdout=stdout,
        stderr=stderr,
        environ=environ if environ is not None else {},
        discover=lambda: Discovery.from_modules(fake_module()),
    )
    status = run_cli(list(argv), context)
    return Result(status, stdout.getvalue(), stderr.getvalue())


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- validate -------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "text"), [(Side.SERVER, SERVER_TOML), (Side.AGENT, AGENT_TOML)])
@pytest.mark.parametrize(
    "flags",
    [
        ("-config", "{path}"),
        ("--config", "{path}"),
        ("-config={path}",),
        ("--config={path}",),
    ],
)
def test_validate_accepts_a_valid_file_with_either_flag_spelling(
    tmp_path: Path, side: Side, text: str, flags: tuple[str, ...]
) -> None:
    path = write(tmp_path, text)
    result = run(side, "validate", *(flag.format(path=path) for flag in flags))
    assert result == Result(0, "configuration is valid\n", "")


def test_validate_reports_every_issue_on_its_own_line(tmp_path: Path) -> None:
    text = (
        SERVER_TOML.replace('data_dir = "/var/lib/pyspire/server"', 'bind_port = "8081"')
        .replace("database_path", "database_file")
        .replace("[server.plugins.key_manager.fakekeys]", "[server.plugins.key_manager.vault]")
    )
    result = run(Side.SERVER, "validate", "-config", str(write(tmp_path, text)))
    assert result.status == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    paths = [line.split(": ", 1)[0] for line in lines]
    assert paths == [
        "server.data_dir",
        "server.bind_port",
        "server.plugins.datastore.fakestore.database_file",
        "server.plugins.key_manager.vault",
    ]
    assert "Traceback" not in result.stderr


def test_validate_prints_warnings_and_still_passes(tmp_path: Path) -> None:
    text = AGENT_TOML.replace(
        'trust_bundle_path = "/etc/pyspire/bundle.pem"', "insecure_bootstrap = true"
    )
    result = run(Side.AGENT, "validate", "--config", str(write(tmp_path, text)))
    assert result.status == 0
    assert result.stdout == "configuration is valid\n"
    assert result.stderr.startswith("warning: agent.insecure_bootstrap: ")


def test_validate_reports_a_syntax_error_with_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\ntrust_domain = 1\n")
    result = run(Side.SERVER, "validate", "-config", str(path))
    assert result.status == 1
    assert result.stderr.startswith(f"invalid toml in {str(path)!r} at line 1, column 8: ")
    assert len(result.stderr.splitlines()) == 1


def test_validate_reports_a_missing_file_in_one_line(tmp_path: Path) -> None:
    result = run(Side.AGENT, "validate", "-config", str(tmp_path / "nope.toml"))
    assert result.status == 1
    assert result.stderr == (
        f"cannot read configuration file {str(tmp_path / 'nope.toml')!r}: "
        "no such file or directory\n"
    )


def test_validate_uses_the_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "agent").mkdir(parents=True)
    write(tmp_path / "conf" / "agent", AGENT_TOML, "agent.toml")
    assert run(Side.AGENT, "validate").status == 0
    assert "'conf/server/server.toml'" in run(Side.SERVER, "validate").stderr


@pytest.mark.parametrize("flag", ["-expandEnv", "--expand-env"])
def test_validate_expands_environment_variables_when_asked(tmp_path: Path, flag: str) -> None:
    path = write(tmp_path, SERVER_TOML.replace('"example.org"', '"${TRUST_DOMAIN}"'))
    environ = {"TRUST_DOMAIN": "prod.example.org"}
    assert run(Side.SERVER, "validate", "-config", str(path), flag, environ=environ).status == 0
    without = run(Side.SERVER, "validate", "-config", str(path), environ=environ)
    assert without.status == 1
    assert without.stderr.startswith("server.trust_domain: ")


def test_server_file_is_not_an_agent_file(tmp_path: Path) -> None:
    result = run(Side.AGENT, "validate", "-config", str(write(tmp_path, SERVER_TOML)))
    assert result.status == 1
    assert "server: unknown top-level table; the agent configuration has only [agent]" in (
        result.stderr.splitlines()
    )


# --- plugins --------------------------------------------------------------------------------


def test_plugins_prints_a_table_for_the_side() -> None:
    result = run(Side.AGENT, "plugins")
    assert result.status == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "NAME", "DISTRIBUTION", "VERSION"]
    rows = [line.split() for line in lines[1:]]
    assert rows == [
        ["key_manager", "fakekeys", "pyspire_fake_plugins"],
        ["node_attestor", "fakenode", "pyspire_fake_plugins"],
        ["workload_attestor", "fakeworkload", "pyspire_fake_plugins"],
    ]
    assert all(line == line.rstrip() for line in lines)
    assert lines[1].index("fakekeys") == lines[0].index("NAME")


@pytest.mark.parametrize("flags", [("-output", "json"), ("--output", "json"), ("-output=json",)])
def test_plugins_as_json(flags: tuple[str, ...]) -> None:
    result = run(Side.SERVER, "plugins", *flags)
    assert result.status == 0
    document = json.loads(result.stdout)
    assert [(row["type"], row["name"]) for row in document] == [
        ("datastore", "fakestore"),
        ("key_manager", "fakekeys"),
        ("node_attestor", "fakenode"),
    ]
    assert document[0] == {
        "type": "datastore",
        "name": "fakestore",
        "distribution": "pyspire_fake_plugins",
        "version": "",
        "description": "fake fakestore plugin",
    }


def test_plugins_with_nothing_installed() -> None:
    stdout = io.StringIO()
    context = CliContext(
        side=Side.SERVER,
        prog="pyspire-server",
        stdout=stdout,
        stderr=io.StringIO(),
        discover=lambda: Discovery.from_modules(),
    )
    assert run_cli(["plugins"], context) == 0
    assert stdout.getvalue() == "no plugins installed for the server\n"


def test_broken_plugin_is_one_line_per_problem_without_traceback() -> None:
    module = types.ModuleType("pyspire_broken_plugin")

    def pyspire_datastores() -> object:
        return "not a list"

    module.pyspire_datastores = hookimpl(pyspire_datastores)  # type: ignore[attr-defined]
    stderr = io.StringIO()
    context = CliContext(
        side=Side.SERVER,
        prog="pyspire-server",
        stdout=io.StringIO(),
        stderr=stderr,
        discover=lambda: Discovery.from_modules(module),
    )
    assert run_cli(["plugins"], context) == 1
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("pyspire-server: error: ")
    assert "pyspire_broken_plugin" in lines[0]


def test_plugins_rejects_an_unknown_output() -> None:
    result = run(Side.SERVER, "plugins", "-output", "yaml")
    assert result.status == 2
    assert result.stderr.startswith("pyspire-server plugins: error: argument -output/--output")
    assert len(result.stderr.splitlines()) == 1


# --- the shell ------------------------------------------------------------------------------


HELP_LEVELS = [(), ("validate",), ("plugins",)]


@pytest.mark.parametrize("side", [Side.SERVER, Side.AGENT])
@pytest.mark.parametrize("level", HELP_LEVELS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_at_every_level_exits_zero(side: Side, level: tuple[str, ...], flag: str) -> None:
    result = run(side, *level, flag)
    assert result.status == 0
    assert result.stdout.startswith(f"usage: pyspire-{side}")
    assert result.stderr == ""


def test_help_lists_commands_and_both_flag_spellings() -> None:
    top = run(Side.SERVER, "-h").stdout
    assert "validate" in top
    assert "plugins" in top
    validate_help = run(Side.AGENT, "validate", "-h").stdout
    assert "-config FILE, --config FILE" in validate_help
    assert "-expandEnv, --expand-env" in validate_help
    assert "conf/agent/agent.toml" in validate_help


def test_no_command_prints_help_to_stderr_and_fails() -> None:
    result = run(Side.AGENT)
    assert result.status == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: pyspire-agent")


def test_unknown_command_and_flag_are_one_line_usage_errors() -> None:
    unknown = run(Side.SERVER, "bogus")
    assert unknown.status == 2
    assert unknown.stderr.startswith("pyspire-server: error: argument <command>: invalid choice")
    assert len(unknown.stderr.splitlines()) == 1
    flag = run(Side.SERVER, "validate", "-bogus")
    assert flag.status == 2
    assert flag.stderr == (
        "pyspire-server validate: error: unrecognized arguments: -bogus "
        "(see 'pyspire-server validate -h')\n"
    )
    nested = run(Side.SERVER, "entry", "show", "-bogus", "x")
    assert nested.status == 2
    assert nested.stderr == (
        "pyspire-server entry show: error: unrecognized arguments: -bogus x "
        "(see 'pyspire-server entry show -h')\n"
    )


def test_version() -> None:
    result = run(Side.SERVER, "--version")
    assert result.status == 0
    assert result.stdout.startswith("pyspire-server ")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``main`` configures process-wide logging; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_main_runs_in_process_with_installed_plugins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, '[server]\ntrust_domain = "example.org"\ndata_dir = "d"\nbind_port = -1\n'
    )
    assert server_main(["validate", "-config", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == "server.bind_port: must be between 0 and 65535, found -1"
    assert all(line.startswith("server.") for line in lines)
    assert agent_main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: pyspire-agent")


def _script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"console script {name} is not installed")
    return found


def test_installed_console_scripts(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\ntrust_domain = "example.org"\ndata_dir = "d"\nx = 1\n')
    environ = {**os.environ, "NO_COLOR": "1"}
    invalid = subprocess.run(
        [_script("pyspire-server"), "validate", "-config", str(path)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
    assert invalid.returncode == 1
    assert "server.x: unknown key" in invalid.stderr
    assert "Traceback" not in invalid.stderr
    listing = subprocess.run(
        [_script("pyspire-agent"), "plugins", "--output", "json"],
        capture_output=True,
        text=True,
        env={**environ, "PYSPIRE_PLUGINS_BLOCK": "pyspire-keymanager-memory"},
        timeout=60,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)  # nothing but the document on standard output
    assert "pyspire-keymanager-memory" not in {row["distribution"] for row in rows}
    helped = subprocess.run(
        [_script("pyspire-agent"), "validate", "--help"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0
    assert "-expandEnv, --expand-env" in helped.stdout
